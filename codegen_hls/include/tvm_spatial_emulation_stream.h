// hls::stream for the emulation build of tvm-spatial designs (never for synthesis).
//
// Why: the generated kernels move every activation element through hls::stream. Xilinx's
// C-simulation stream (hls_stream.h) keeps elements in a std::deque and reads them through
// an out-of-line call, about 2.5 ns per element written and read; in a BERT-base run that is
// a sixth of the emulation time. In emulation each dataflow process runs to completion
// before the next one starts, so a stream is a buffer filled, then drained: this class keeps
// the elements in one contiguous array that is reused once drained, with the same interface
// and the same observable behaviour as Xilinx's model (FIFO order; a read of an empty stream
// warns and returns a default value; leftover data warns at destruction). The arrays of
// destroyed streams are kept for the next streams (a kernel declares the same streams in the
// same order on every call), so steady-state calls neither allocate nor fault in pages.
// The common header includes it only when TVM_SPATIAL_EMULATION_STREAMS is defined and
// __SYNTHESIS__ is not: Vitis HLS and Vitis C simulation keep Xilinx's stream.
#ifndef TVM_SPATIAL_EMULATION_STREAM_H_
#define TVM_SPATIAL_EMULATION_STREAM_H_

#include <cstddef>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace hls {

template <typename T>
class stream {
 public:
  stream() : name_("hls_stream") { reuse_storage(); }
  explicit stream(const std::string& name) : name_(name) { reuse_storage(); }
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;
  ~stream() {
    if (!empty()) {
      std::fprintf(stderr, "WARNING: hls::stream '%s' contains leftover data\n", name_.c_str());
    }
    std::vector<std::vector<T>>& pool = spare_storage();
    if (pool.size() < kMaxSpare) {
      data_.clear();
      pool.push_back(std::move(data_));
    }
  }

  bool empty() const { return head_ == data_.size(); }
  bool full() const { return false; }
  std::size_t size() const { return data_.size() - head_; }

  void write(const T& value) { data_.push_back(value); }
  bool write_nb(const T& value) {
    write(value);
    return true;
  }
  void operator<<(const T& value) { write(value); }

  T read() {
    if (empty()) {
      return read_empty();
    }
    T value = data_[head_++];
    if (head_ == data_.size()) {  // drained: reuse the storage from the start
      data_.clear();
      head_ = 0;
    }
    return value;
  }
  void read(T& value) { value = read(); }
  bool read_nb(T& value) {
    if (empty()) {
      return false;
    }
    value = read();
    return true;
  }
  void operator>>(T& value) { read(value); }

 private:
  static constexpr std::size_t kMaxSpare = 4096;

  // Last destroyed, first reused: streams are destroyed in the reverse order of their
  // construction, so each stream of the next call gets the array it needed last time.
  // The pool is never destroyed (it holds at most the arrays of one call's streams): a
  // static stream (a scheduled function's) is destroyed at exit, after every thread_local
  // object, and must still find its pool.
  static std::vector<std::vector<T>>& spare_storage() {
    static thread_local std::vector<std::vector<T>>* pool = new std::vector<std::vector<T>>();
    return *pool;
  }
  void reuse_storage() {
    std::vector<std::vector<T>>& pool = spare_storage();
    if (!pool.empty()) {
      data_ = std::move(pool.back());
      pool.pop_back();
    }
  }

  __attribute__((noinline, cold)) T read_empty() const {
    std::fprintf(stderr, "WARNING: hls::stream '%s' is read while empty\n", name_.c_str());
    return T();
  }

  std::string name_;
  std::vector<T> data_;
  std::size_t head_ = 0;
};

}  // namespace hls

#endif  // TVM_SPATIAL_EMULATION_STREAM_H_
