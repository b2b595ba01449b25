"""Choosing the kernel library's parameters of a design: the allocation policy
``relax.build`` applies (:mod:`.policy`) and meta-schedule tuning with the analytical
model as the runner (:mod:`.tuner`)."""

from __future__ import annotations

from .policy import AllocationPolicy, DesignOverBudgetWarning, allocation, current_policy

__all__ = ["AllocationPolicy", "DesignOverBudgetWarning", "allocation", "current_policy"]
