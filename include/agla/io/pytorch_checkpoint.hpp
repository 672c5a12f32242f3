#pragma once
/// \file
/// PyTorch's zip checkpoint format (`torch.save` since 1.6: `pytorch_model.bin`, `*.pth`, `*.pt`),
/// read with a weights-only unpickler that never executes code.
///
/// The zip container is read by agla's strict `StoredZip` (`zip.hpp`): every declared size is
/// checked against the central directory, the local headers and the file before anything is
/// allocated, and compressed records are refused (torch.save never writes them), so no record
/// can inflate; a storage is read only when its record holds exactly the bytes the pickle says
/// it needs. The pickle (`data.pkl`) is interpreted here. Only what a (possibly nested) state dict needs is accepted:
/// the binary opcodes of pickle protocols 2-5 for None/bool/int/float/str/bytes, tuples, lists,
/// dicts and the memo; the globals `collections.OrderedDict`, `torch._utils._rebuild_tensor`,
/// `_rebuild_tensor_v2`, `_rebuild_parameter`, `_rebuild_parameter_with_state`,
/// `torch._tensor._rebuild_from_type_v2` (for plain tensors and Parameters) and the
/// `torch.*Storage` types named by storage persistent ids; BUILD only on dicts (the `_metadata`
/// attribute of `state_dict()` OrderedDicts, which is dropped). Every other global (os.system,
/// builtins.eval, user classes, numpy), opcode (NEWOBJ, INST, EXT, ...) or call is refused with
/// agla::FormatError naming the file and the offender -- like `torch.load(weights_only=True)`.
/// Tensor geometry is validated against the storage (offset, sizes and strides in bounds) and
/// containers cannot be modified after being placed in another one, so no cycles and at most
/// `kMaxPickleDepth` levels of nesting can be built. The unpickler builds at most
/// `kMaxPickleValues` values (stack pushes, MARKs, memo entries and container insertions
/// together); copies of a value share its strings and containers, and dict keys are indexed, so
/// memory and time stay proportional to that bound whatever the pickle repeats. Allocation
/// failures are reported as `agla::FormatError` naming the file.
///
/// Tensors keep their file dtype, live on the CPU and, as with `torch.load`, views saved from one
/// storage share its memory (no copy of the record bytes either). The legacy pre-1.6 format and
/// TorchScript archives are refused.

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "agla/error.hpp"
#include "agla/io/file.hpp"
#include "agla/io/limits.hpp"
#include "agla/io/sharded_index.hpp"
#include "agla/io/state_dict.hpp"
#include "agla/io/zip.hpp"
#include "agla/names.hpp"

namespace agla::io {

/// One node of an unpickled checkpoint: None, bool, int, float, str, bytes, big int, tuple, list,
/// dict (insertion order kept), tensor, storage or an allow-listed global.
class PickleValue {
 public:
  /// What the node holds.
  enum class Kind {
    kNone,
    kBool,
    kInt,
    kBigInt,
    kFloat,
    kString,
    kBytes,
    kTuple,
    kList,
    kDict,
    kTensor,
    kStorage,
    kGlobal
  };

  PickleValue() = default;
  static PickleValue none() { return PickleValue(Kind::kNone); }
  static PickleValue boolean(bool v) {
    PickleValue p(Kind::kBool);
    p.int_ = v ? 1 : 0;
    return p;
  }
  static PickleValue integer(int64_t v) {
    PickleValue p(Kind::kInt);
    p.int_ = v;
    return p;
  }
  static PickleValue real(double v) {
    PickleValue p(Kind::kFloat);
    p.float_ = v;
    return p;
  }
  /// kString, kBytes, kBigInt (two's-complement little-endian bytes) or kGlobal ("module.name").
  static PickleValue text(Kind kind, std::string v) {
    PickleValue p(kind);
    p.string_ = std::make_shared<const std::string>(std::move(v));
    return p;
  }
  /// kTensor or kStorage (a 1-D tensor over the storage's elements).
  static PickleValue tensor_value(Kind kind, at::Tensor t) {
    PickleValue p(kind);
    p.tensor_ = std::move(t);
    return p;
  }
  /// An empty kTuple, kList or kDict.
  static PickleValue container(Kind kind) {
    PickleValue p(kind);
    p.container_ = std::make_shared<Container>();
    return p;
  }

  Kind kind() const { return kind_; }
  bool is(Kind k) const { return kind_ == k; }
  bool as_bool() const {
    expect(Kind::kBool);
    return int_ != 0;
  }
  int64_t as_int() const {
    expect(Kind::kInt);
    return int_;
  }
  /// kFloat, or kInt converted.
  double as_float() const {
    if (kind_ == Kind::kInt) return static_cast<double>(int_);
    expect(Kind::kFloat);
    return float_;
  }
  /// kString, kBytes, kBigInt bytes or kGlobal name.
  const std::string& as_string() const {
    check<FormatError>(
        kind_ == Kind::kString || kind_ == Kind::kBytes || kind_ == Kind::kBigInt || kind_ == Kind::kGlobal,
        "agla::io::PickleValue: expected a string, got ", kind_name(kind_));
    return *string_;
  }
  /// kTensor or kStorage.
  const at::Tensor& as_tensor() const {
    check<FormatError>(kind_ == Kind::kTensor || kind_ == Kind::kStorage,
                       "agla::io::PickleValue: expected a tensor, got ", kind_name(kind_));
    return tensor_;
  }
  /// Elements of a kTuple or kList.
  const std::vector<PickleValue>& items() const {
    check<FormatError>(kind_ == Kind::kTuple || kind_ == Kind::kList,
                       "agla::io::PickleValue: expected a tuple or list, got ", kind_name(kind_));
    return container_->items;
  }
  /// (key, value) pairs of a kDict in insertion order.
  const std::vector<std::pair<PickleValue, PickleValue>>& entries() const {
    expect(Kind::kDict);
    return container_->entries;
  }
  /// The value under string key `key` of a kDict, or nullptr.
  const PickleValue* find(const std::string& key) const {
    expect(Kind::kDict);
    for (const auto& [k, v] : container_->entries)
      if (k.is(Kind::kString) && *k.string_ == key) return &v;
    return nullptr;
  }

  /// Name of a kind, for messages.
  static const char* kind_name(Kind k) {
    static constexpr NamedValue<Kind> kNames[] = {
        {Kind::kNone, "None"},   {Kind::kBool, "bool"},   {Kind::kInt, "int"}, {Kind::kBigInt, "int (over 64 bits)"},
        {Kind::kFloat, "float"}, {Kind::kString, "str"},  {Kind::kBytes, "bytes"}, {Kind::kTuple, "tuple"},
        {Kind::kList, "list"},   {Kind::kDict, "dict"},   {Kind::kTensor, "tensor"}, {Kind::kStorage, "storage"},
        {Kind::kGlobal, "global"}};
    return name_of(k, kNames);
  }

 private:
  friend class PickleBuilder;
  struct Container {
    std::vector<PickleValue> items;
    std::vector<std::pair<PickleValue, PickleValue>> entries;
    std::unordered_map<std::string, size_t> index;  // dict key (see dict_key) -> position in entries
    bool sealed = false;                            // placed inside another container: no further insertions
    int depth = 1;
  };

  /// A dict key as one string: its kind, then its value (keys are str, int, bool or None).
  std::string dict_key() const {
    std::string key(1, static_cast<char>(kind_));
    if (string_ != nullptr) return key + *string_;
    return key + std::to_string(int_);
  }

  explicit PickleValue(Kind k) : kind_(k) {}
  void expect(Kind k) const {
    check<FormatError>(kind_ == k, "agla::io::PickleValue: expected ", kind_name(k), ", got ", kind_name(kind_));
  }

  Kind kind_ = Kind::kNone;
  int64_t int_ = 0;
  double float_ = 0.0;
  std::shared_ptr<const std::string> string_;  // shared by copies: DUP and memo reads copy no text
  at::Tensor tensor_;
  std::shared_ptr<Container> container_;
};

/// Mutation of containers during unpickling, with the nesting rules documented in the file brief.
class PickleBuilder {
 public:
  static constexpr int kMaxDepth = kMaxPickleDepth;

  /// Appends `child` to the kList/kTuple `parent`; throws agla::FormatError (prefixed by `where`)
  /// when the parent is sealed, the child is the parent, or nesting would exceed kMaxDepth.
  static void append(PickleValue& parent, const PickleValue& child, const std::string& where) {
    adopt(parent, child, where);
    parent.container_->items.push_back(child);
  }
  /// Inserts or replaces `key` -> `value` in the kDict `parent`, with the same rules as append.
  static void set_item(PickleValue& parent, const PickleValue& key, const PickleValue& value,
                       const std::string& where) {
    check<FormatError>(parent.is(PickleValue::Kind::kDict), where, ": SETITEM on a ",
                       PickleValue::kind_name(parent.kind()), ", expected a dict");
    check<FormatError>(key.is(PickleValue::Kind::kString) || key.is(PickleValue::Kind::kInt) ||
                           key.is(PickleValue::Kind::kBool) || key.is(PickleValue::Kind::kNone),
                       where, ": dict keys must be str, int, bool or None; got ", PickleValue::kind_name(key.kind()));
    adopt(parent, value, where);
    auto& container = *parent.container_;
    const auto [it, inserted] = container.index.emplace(key.dict_key(), container.entries.size());
    if (!inserted) {
      container.entries[it->second].second = value;
      return;
    }
    container.entries.emplace_back(key, value);
  }

 private:
  static void adopt(PickleValue& parent, const PickleValue& child, const std::string& where) {
    check<FormatError>(parent.container_ != nullptr, where, ": cannot add items to a ",
                       PickleValue::kind_name(parent.kind()));
    check<FormatError>(!parent.container_->sealed, where,
                       ": refused to modify a container after it was placed in another one");
    if (child.container_ == nullptr) return;
    check<FormatError>(child.container_ != parent.container_, where, ": refused a container that contains itself");
    child.container_->sealed = true;
    parent.container_->depth = std::max(parent.container_->depth, child.container_->depth + 1);
    check<FormatError>(parent.container_->depth <= kMaxDepth, where, ": nesting deeper than ", kMaxDepth, " levels");
  }
};

namespace detail {

/// dtype of a `torch.<Name>Storage` global, or Undefined when it is not one we accept.
inline at::ScalarType storage_dtype(const std::string& global) {
  static const std::map<std::string, at::ScalarType> kTypes = {{"torch.FloatStorage", at::kFloat},
                                                               {"torch.DoubleStorage", at::kDouble},
                                                               {"torch.HalfStorage", at::kHalf},
                                                               {"torch.BFloat16Storage", at::kBFloat16},
                                                               {"torch.LongStorage", at::kLong},
                                                               {"torch.IntStorage", at::kInt},
                                                               {"torch.ShortStorage", at::kShort},
                                                               {"torch.CharStorage", at::kChar},
                                                               {"torch.ByteStorage", at::kByte},
                                                               {"torch.BoolStorage", at::kBool},
                                                               {"torch.ComplexFloatStorage", at::kComplexFloat},
                                                               {"torch.ComplexDoubleStorage", at::kComplexDouble},
                                                               {"torch.UntypedStorage", at::kByte},
                                                               {"torch.storage.UntypedStorage", at::kByte}};
  const auto it = kTypes.find(global);
  return it == kTypes.end() ? at::ScalarType::Undefined : it->second;
}

/// The globals a weights-only checkpoint may name.
inline bool allowed_global(const std::string& name) {
  static const std::set<std::string> kAllowed = {"collections.OrderedDict",
                                                 "torch._utils._rebuild_tensor",
                                                 "torch._utils._rebuild_tensor_v2",
                                                 "torch._utils._rebuild_parameter",
                                                 "torch._utils._rebuild_parameter_with_state",
                                                 "torch._tensor._rebuild_from_type_v2",
                                                 "torch._tensor.Tensor",
                                                 "torch.Tensor",
                                                 "torch.nn.parameter.Parameter"};
  return kAllowed.count(name) != 0 || storage_dtype(name) != at::ScalarType::Undefined;
}

/// Loads the storage record `key` as a 1-D tensor of `numel` elements of `dtype`.
using StorageLoader = std::function<at::Tensor(const std::string& key, at::ScalarType dtype, int64_t numel)>;

/// The weights-only unpickler (pickle protocols 2-5, binary opcodes only).
class WeightsOnlyUnpickler {
 public:
  WeightsOnlyUnpickler(const uint8_t* data, size_t size, std::string where, StorageLoader load_storage)
      : data_(data), size_(size), where_(std::move(where)), load_storage_(std::move(load_storage)) {}

  PickleValue run() {
    while (true) {
      const size_t at = pos_;
      const uint8_t op = read_u8();
      switch (op) {
        case 0x80:
          read_u8();
          break;  // PROTO
        case 0x95:
          read_n(8);
          break;     // FRAME: framing hint only
        case '.': {  // STOP
          check<FormatError>(stack_.size() == 1 && marks_.empty(), where_, ": malformed pickle (STOP with ",
                             stack_.size(), " values on the stack)");
          return stack_.back();
        }
        case '(':
          charge(1);
          marks_.push_back(stack_.size());
          break;  // MARK
        case '0':
          pop();
          break;  // POP
        case '1':
          pop_mark();
          break;  // POP_MARK
        case '2':
          push(top());
          break;  // DUP
        case 'N':
          push(PickleValue::none());
          break;
        case 0x88:
          push(PickleValue::boolean(true));
          break;
        case 0x89:
          push(PickleValue::boolean(false));
          break;
        case 'J': {  // BININT
          int32_t v = 0;
          std::memcpy(&v, read_n(4), 4);
          push(PickleValue::integer(v));
          break;
        }
        case 'K':
          push(PickleValue::integer(read_u8()));
          break;  // BININT1
        case 'M':
          push(PickleValue::integer(read_le(2)));
          break;  // BININT2
        case 0x8a:
          push_long(read_u8());
          break;  // LONG1
        case 0x8b:
          push_long(static_cast<size_t>(read_le(4)));
          break;     // LONG4
        case 'G': {  // BINFLOAT (big-endian)
          const uint8_t* p = read_n(8);
          uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];
          double v = 0;
          std::memcpy(&v, &bits, 8);
          push(PickleValue::real(v));
          break;
        }
        case 'X':
          push_text(PickleValue::Kind::kString, read_le(4));
          break;  // BINUNICODE
        case 0x8c:
          push_text(PickleValue::Kind::kString, read_u8());
          break;  // SHORT_BINUNICODE
        case 0x8d:
          push_text(PickleValue::Kind::kString, read_le(8));
          break;  // BINUNICODE8
        case 'T':
          push_text(PickleValue::Kind::kString, read_le(4));
          break;  // BINSTRING
        case 'U':
          push_text(PickleValue::Kind::kString, read_u8());
          break;  // SHORT_BINSTRING
        case 'B':
          push_text(PickleValue::Kind::kBytes, read_le(4));
          break;  // BINBYTES
        case 'C':
          push_text(PickleValue::Kind::kBytes, read_u8());
          break;  // SHORT_BINBYTES
        case 0x8e:
          push_text(PickleValue::Kind::kBytes, read_le(8));
          break;  // BINBYTES8
        case ')':
          push(new_container(PickleValue::Kind::kTuple));
          break;
        case 't':
          push(make_sequence(PickleValue::Kind::kTuple, pop_mark()));
          break;
        case 0x85:
          push(make_sequence(PickleValue::Kind::kTuple, pop_n(1)));
          break;
        case 0x86:
          push(make_sequence(PickleValue::Kind::kTuple, pop_n(2)));
          break;
        case 0x87:
          push(make_sequence(PickleValue::Kind::kTuple, pop_n(3)));
          break;
        case ']':
          push(new_container(PickleValue::Kind::kList));
          break;
        case 'l':
          push(make_sequence(PickleValue::Kind::kList, pop_mark()));
          break;     // LIST
        case 'a': {  // APPEND
          const PickleValue v = pop();
          PickleValue& list = top();
          check_kind(list, PickleValue::Kind::kList, "APPEND");
          charge(1);
          PickleBuilder::append(list, v, where_);
          break;
        }
        case 'e': {  // APPENDS
          const std::vector<PickleValue> values = pop_mark();
          PickleValue& list = top();
          check_kind(list, PickleValue::Kind::kList, "APPENDS");
          charge(values.size());
          for (const PickleValue& v : values) PickleBuilder::append(list, v, where_);
          break;
        }
        case '}':
          push(new_container(PickleValue::Kind::kDict));
          break;
        case 'd': {  // DICT
          const std::vector<PickleValue> kv = pop_mark();
          PickleValue dict = new_container(PickleValue::Kind::kDict);
          set_items(dict, kv);
          push(dict);
          break;
        }
        case 's': {  // SETITEM
          const PickleValue value = pop();
          const PickleValue key = pop();
          charge(1);
          PickleBuilder::set_item(top(), key, value, where_);
          break;
        }
        case 'u': {  // SETITEMS
          const std::vector<PickleValue> kv = pop_mark();
          set_items(top(), kv);
          break;
        }
        case 'q':
          memo_put(read_u8());
          break;  // BINPUT
        case 'r':
          memo_put(static_cast<uint64_t>(read_le(4)));
          break;  // LONG_BINPUT
        case 0x94:
          memo_put(memo_.size());
          break;  // MEMOIZE
        case 'h':
          push(memo_get(read_u8()));
          break;  // BINGET
        case 'j':
          push(memo_get(static_cast<uint64_t>(read_le(4))));
          break;     // LONG_BINGET
        case 'c': {  // GLOBAL
          std::string module = read_line();
          std::string name = read_line();
          push_global(module + "." + name);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          const PickleValue name = pop();
          const PickleValue module = pop();
          check<FormatError>(name.is(PickleValue::Kind::kString) && module.is(PickleValue::Kind::kString), where_,
                             ": STACK_GLOBAL needs two strings");
          push_global(module.as_string() + "." + name.as_string());
          break;
        }
        case 'Q':
          push(persistent_load(pop()));
          break;     // BINPERSID
        case 'R': {  // REDUCE
          const PickleValue args = pop();
          const PickleValue callable = pop();
          push(reduce(callable, args));
          break;
        }
        case 'b': {  // BUILD
          const PickleValue state = pop();
          const PickleValue& object = top();
          // state_dict() OrderedDicts carry `_metadata` (module versions) as instance state.
          check<FormatError>(object.is(PickleValue::Kind::kDict) &&
                                 (state.is(PickleValue::Kind::kDict) || state.is(PickleValue::Kind::kNone)),
                             where_, ": refused BUILD on a ", PickleValue::kind_name(object.kind()),
                             " (weights-only: BUILD is accepted on dicts only)");
          break;
        }
        default:
          throw FormatError(agla::detail::concat(where_, ": refused pickle opcode 0x", hex(op), " at byte ", at,
                                                 " (weights-only unpickler: not needed by a state dict)"));
      }
    }
  }

 private:
  static std::string hex(uint8_t v) {
    const char* digits = "0123456789abcdef";
    return std::string{digits[v >> 4], digits[v & 15]};
  }

  const uint8_t* read_n(size_t n) {
    check<FormatError>(n <= size_ - pos_, where_, ": truncated pickle (need ", n, " bytes at ", pos_, " of ", size_,
                       ")");
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint8_t read_u8() { return *read_n(1); }
  int64_t read_le(int bytes) {
    const uint8_t* p = read_n(static_cast<size_t>(bytes));
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
    check<FormatError>(v <= static_cast<uint64_t>(INT64_MAX), where_, ": length field out of range");
    return static_cast<int64_t>(v);
  }
  std::string read_line() {
    const size_t start = pos_;
    while (pos_ < size_ && data_[pos_] != '\n') ++pos_;
    check<FormatError>(pos_ < size_, where_, ": truncated pickle (unterminated GLOBAL)");
    ++pos_;
    return std::string(reinterpret_cast<const char*>(data_ + start), pos_ - 1 - start);
  }

  /// Counts `n` more values against kMaxPickleValues (see the file comment).
  void charge(size_t n) {
    check<FormatError>(n <= kMaxPickleValues - values_, where_, ": the pickle builds more than ", kMaxPickleValues,
                       " values (stack, memo and containers; a state dict needs about 70 per tensor)");
    values_ += n;
  }
  /// An empty container; it weighs kContainerWeight values (its bookkeeping is larger than a value).
  PickleValue new_container(PickleValue::Kind kind) {
    charge(kContainerWeight - 1);
    return PickleValue::container(kind);
  }
  void push(PickleValue v) {
    charge(1);
    stack_.push_back(std::move(v));
  }
  void memo_put(uint64_t key) {
    charge(1);
    memo_[key] = top();
  }
  PickleValue& top() {
    check<FormatError>(stack_.size() > (marks_.empty() ? 0 : marks_.back()), where_,
                       ": malformed pickle (stack underflow at byte ", pos_, ")");
    return stack_.back();
  }
  PickleValue pop() {
    PickleValue v = top();
    stack_.pop_back();
    return v;
  }
  std::vector<PickleValue> pop_n(size_t n) {
    check<FormatError>(stack_.size() >= n + (marks_.empty() ? 0 : marks_.back()), where_,
                       ": malformed pickle (stack underflow at byte ", pos_, ")");
    std::vector<PickleValue> out(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
    stack_.resize(stack_.size() - n);
    return out;
  }
  std::vector<PickleValue> pop_mark() {
    check<FormatError>(!marks_.empty(), where_, ": malformed pickle (no MARK at byte ", pos_, ")");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<PickleValue> out(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return out;
  }
  PickleValue memo_get(uint64_t key) {
    const auto it = memo_.find(key);
    check<FormatError>(it != memo_.end(), where_, ": malformed pickle (memo key ", key, " not set)");
    return it->second;
  }
  void check_kind(const PickleValue& v, PickleValue::Kind k, const char* op) {
    check<FormatError>(v.is(k), where_, ": ", op, " on a ", PickleValue::kind_name(v.kind()), ", expected a ",
                       PickleValue::kind_name(k));
  }

  void push_text(PickleValue::Kind kind, int64_t length) {
    const uint8_t* p = read_n(static_cast<size_t>(length));
    push(PickleValue::text(kind, std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(length))));
  }
  void push_long(size_t n) {
    const uint8_t* p = read_n(n);
    if (n > 8) {
      push(PickleValue::text(PickleValue::Kind::kBigInt, std::string(reinterpret_cast<const char*>(p), n)));
      return;
    }
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = (v << 8) | p[i];
    if (n > 0 && n < 8 && (p[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
    int64_t s = 0;
    std::memcpy(&s, &v, 8);
    push(PickleValue::integer(s));
  }
  void push_global(const std::string& name) {
    check<FormatError>(allowed_global(name), where_, ": refused global '", name,
                       "' (weights-only unpickler: a checkpoint may only name OrderedDict, tensor rebuild "
                       "functions and torch storage types)");
    push(PickleValue::text(PickleValue::Kind::kGlobal, name));
  }

  PickleValue make_sequence(PickleValue::Kind kind, const std::vector<PickleValue>& values) {
    charge(values.size());
    PickleValue seq = new_container(kind);
    for (const PickleValue& v : values) PickleBuilder::append(seq, v, where_);
    return seq;
  }
  void set_items(PickleValue& dict, const std::vector<PickleValue>& kv) {
    check<FormatError>(kv.size() % 2 == 0, where_, ": malformed pickle (odd number of dict items)");
    charge(kv.size() / 2);
    for (size_t i = 0; i < kv.size(); i += 2) PickleBuilder::set_item(dict, kv[i], kv[i + 1], where_);
  }

  /// BINPERSID: torch's ('storage', storage_type, key, location, numel) tuples only.
  PickleValue persistent_load(const PickleValue& pid) {
    check<FormatError>(pid.is(PickleValue::Kind::kTuple) && pid.items().size() == 5 &&
                           pid.items()[0].is(PickleValue::Kind::kString) && pid.items()[0].as_string() == "storage" &&
                           pid.items()[1].is(PickleValue::Kind::kGlobal) &&
                           pid.items()[2].is(PickleValue::Kind::kString) && pid.items()[4].is(PickleValue::Kind::kInt),
                       where_, ": refused persistent id (expected ('storage', type, key, location, numel))");
    const std::string& type = pid.items()[1].as_string();
    const at::ScalarType dtype = storage_dtype(type);
    check<FormatError>(dtype != at::ScalarType::Undefined, where_, ": persistent id names '", type,
                       "', not a storage type");
    const std::string& key = pid.items()[2].as_string();
    const int64_t numel = pid.items()[4].as_int();
    check<FormatError>(numel >= 0, where_, ": storage '", key, "' has negative size ", numel);
    const auto it = storages_.find(key);
    if (it != storages_.end()) {
      check<FormatError>(it->second.scalar_type() == dtype && it->second.numel() == numel, where_, ": storage '", key,
                         "' is referenced with two different types or sizes");
      return PickleValue::tensor_value(PickleValue::Kind::kStorage, it->second);
    }
    at::Tensor storage = load_storage_(key, dtype, numel);
    storages_.emplace(key, storage);
    return PickleValue::tensor_value(PickleValue::Kind::kStorage, storage);
  }

  static std::vector<int64_t> int_tuple(const PickleValue& v, const std::string& where, const char* what) {
    check<FormatError>(v.is(PickleValue::Kind::kTuple) || v.is(PickleValue::Kind::kList), where, ": tensor ", what,
                       " must be a tuple of ints; got ", PickleValue::kind_name(v.kind()));
    std::vector<int64_t> out;
    for (const PickleValue& x : v.items()) {
      check<FormatError>(x.is(PickleValue::Kind::kInt), where, ": tensor ", what, " must hold ints; got ",
                         PickleValue::kind_name(x.kind()));
      out.push_back(x.as_int());
    }
    return out;
  }

  /// `_rebuild_tensor[_v2](storage, offset, size, stride, ...)` with the geometry validated.
  PickleValue rebuild_tensor(const std::vector<PickleValue>& a) {
    check<FormatError>(a.size() >= 4 && a[0].is(PickleValue::Kind::kStorage) && a[1].is(PickleValue::Kind::kInt),
                       where_, ": tensor rebuild expects (storage, offset, size, stride, ...)");
    const at::Tensor& storage = a[0].as_tensor();
    const int64_t offset = a[1].as_int();
    const std::vector<int64_t> size = int_tuple(a[2], where_, "size");
    const std::vector<int64_t> stride = int_tuple(a[3], where_, "stride");
    const int64_t storage_numel = storage.numel();
    check<FormatError>(size.size() == stride.size(), where_, ": tensor has ", size.size(), " sizes but ", stride.size(),
                       " strides");
    check<FormatError>(static_cast<int64_t>(size.size()) <= kMaxTensorDims, where_, ": tensor has ", size.size(),
                       " dimensions; at most ", kMaxTensorDims, " are supported");
    check<FormatError>(offset >= 0 && offset <= storage_numel, where_, ": tensor offset ", offset,
                       " outside its storage of ", storage_numel, " elements");
    bool empty = false;
    for (size_t d = 0; d < size.size(); ++d) {
      check<FormatError>(size[d] >= 0 && stride[d] >= 0, where_, ": tensor has a negative size or stride");
      empty = empty || size[d] == 0;
    }
    if (!empty) {
      // The last element offset + sum((size - 1) * stride) must lie inside the storage; checked
      // one dimension at a time so that nothing overflows.
      int64_t room = storage_numel - 1 - offset;
      check<FormatError>(room >= 0, where_, ": tensor offset ", offset, " outside its storage of ", storage_numel,
                         " elements");
      for (size_t d = 0; d < size.size(); ++d) {
        if (stride[d] == 0 || size[d] == 1) continue;
        check<FormatError>(size[d] - 1 <= room / stride[d], where_, ": tensor of size ", at::IntArrayRef(size),
                           ", stride ", at::IntArrayRef(stride), ", offset ", offset, " reaches past its storage of ",
                           storage_numel, " elements");
        room -= (size[d] - 1) * stride[d];
      }
    }
    return PickleValue::tensor_value(PickleValue::Kind::kTensor, storage.as_strided(size, stride, offset));
  }

  PickleValue reduce(const PickleValue& callable, const PickleValue& args) {
    check<FormatError>(callable.is(PickleValue::Kind::kGlobal), where_, ": refused REDUCE on a ",
                       PickleValue::kind_name(callable.kind()));
    check<FormatError>(args.is(PickleValue::Kind::kTuple), where_, ": REDUCE arguments must be a tuple");
    const std::string& fn = callable.as_string();
    const std::vector<PickleValue>& a = args.items();
    if (fn == "collections.OrderedDict") {
      check<FormatError>(a.empty(), where_, ": OrderedDict is only accepted with no arguments");
      return new_container(PickleValue::Kind::kDict);
    }
    if (fn == "torch._utils._rebuild_tensor_v2" || fn == "torch._utils._rebuild_tensor") return rebuild_tensor(a);
    if (fn == "torch._utils._rebuild_parameter" || fn == "torch._utils._rebuild_parameter_with_state") {
      check<FormatError>(!a.empty() && a[0].is(PickleValue::Kind::kTensor), where_, ": ", fn,
                         " expects a tensor first");
      return a[0];
    }
    if (fn == "torch._tensor._rebuild_from_type_v2") {
      // (func, type, args, state): a tensor subclass wrapper; only plain tensors and Parameters.
      check<FormatError>(a.size() == 4 && a[0].is(PickleValue::Kind::kGlobal) && a[1].is(PickleValue::Kind::kGlobal),
                         where_, ": malformed _rebuild_from_type_v2 arguments");
      const std::string& type = a[1].as_string();
      check<FormatError>(
          type == "torch._tensor.Tensor" || type == "torch.Tensor" || type == "torch.nn.parameter.Parameter", where_,
          ": refused tensor subclass '", type, "'");
      check<FormatError>(
          a[3].is(PickleValue::Kind::kNone) || (a[3].is(PickleValue::Kind::kDict) && a[3].entries().empty()), where_,
          ": refused tensor with Python state");
      PickleValue inner = reduce(a[0], a[2]);
      check<FormatError>(inner.is(PickleValue::Kind::kTensor), where_, ": _rebuild_from_type_v2 did not give a tensor");
      return inner;
    }
    throw FormatError(agla::detail::concat(where_, ": refused REDUCE on '", fn, "' (not a tensor rebuild function)"));
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string where_;
  StorageLoader load_storage_;
  std::vector<PickleValue> stack_;
  std::vector<size_t> marks_;
  uint64_t values_ = 0;  // charged against kMaxPickleValues
  static constexpr size_t kContainerWeight = 4;
  std::unordered_map<uint64_t, PickleValue> memo_;
  std::unordered_map<std::string, at::Tensor> storages_;
};

}  // namespace detail

/// Unpickles the whole object of a PyTorch zip checkpoint (`torch.save` >= 1.6) with the
/// weights-only unpickler; tensors are CPU, file dtype. Throws agla::FormatError naming the file.
inline PickleValue read_pytorch_pickle(const std::string& path) {
  const std::string where = "agla::io::read_pytorch_checkpoint: " + path;
  {
    const uint64_t size = regular_file_size(path, where);
    std::ifstream in(path, std::ios::binary);
    check<FormatError>(in.good(), where, ": cannot open file");
    char magic[4] = {0, 0, 0, 0};
    in.read(magic, 4);
    check<FormatError>(size >= 4 && in.gcount() == 4, where, ": file too short to be a checkpoint");
    check<FormatError>(!(static_cast<unsigned char>(magic[0]) == 0x80 && magic[1] >= 2 && magic[1] <= 5), where,
                       ": legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with "
                       "torch.save from torch >= 1.6 or convert it to safetensors");
    check<FormatError>(magic[0] == 'P' && magic[1] == 'K', where, ": not a zip archive (PyTorch checkpoint)");
  }
  return guard_allocation(where, [&] {
    const StoredZip zip = StoredZip::open(path, where);
    // As PyTorchStreamReader: every record lives under the folder of the first one.
    check<FormatError>(!zip.records().empty(), where, ": the zip archive holds no records");
    const std::string& first = zip.records().front().name;
    check<FormatError>(first.find('/') != std::string::npos, where, ": record '", first,
                       "' is not inside the archive's folder (not a torch.save checkpoint)");
    const std::string prefix = first.substr(0, first.find('/') + 1);
    const ZipRecord* pickle = zip.find(prefix + "data.pkl");
    check<FormatError>(pickle != nullptr, where, ": no data.pkl record (not a torch.save checkpoint)");
    check<FormatError>(zip.find(prefix + "constants.pkl") == nullptr, where,
                       ": TorchScript archives (torch.jit.save) are not supported");
    if (const ZipRecord* byteorder = zip.find(prefix + "byteorder")) {
      const std::string order = zip.read_string(*byteorder, 16);
      check<FormatError>(order == "little", where, ": byte order '", order, "' is not supported (little only)");
    }
    const std::string pickle_bytes = zip.read_string(*pickle, zip.file_size());
    auto load_storage = [&zip, &where, &prefix](const std::string& key, at::ScalarType dtype, int64_t numel) {
      for (char ch : key)
        check<FormatError>(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_', where, ": invalid storage key '",
                           key, "'");
      const std::string record = "data/" + key;
      const ZipRecord* entry = zip.find(prefix + record);
      check<FormatError>(entry != nullptr, where, ": storage record '", record, "' is missing");
      // The record's size (already checked against both zip headers and the file) must be what
      // the pickle declares, before any memory is allocated for it.
      const uint64_t itemsize = c10::elementSize(dtype);
      check<FormatError>(static_cast<uint64_t>(numel) <= entry->size / itemsize &&
                             entry->size == static_cast<uint64_t>(numel) * itemsize,
                         where, ": storage record '", record, "' has ", entry->size, " bytes; expected ", numel, " x ",
                         itemsize);
      at::Tensor storage = at::empty({numel}, at::TensorOptions().dtype(dtype));
      zip.read(*entry, storage.data_ptr());
      if (dtype == at::kBool) {
        const auto* b = static_cast<const uint8_t*>(storage.data_ptr());
        for (uint64_t i = 0; i < entry->size; ++i)
          check<FormatError>(b[i] <= 1, where, ": bool storage '", record, "' holds a byte other than 0 or 1");
      }
      return storage;
    };
    detail::WeightsOnlyUnpickler unpickler(reinterpret_cast<const uint8_t*>(pickle_bytes.data()), pickle_bytes.size(),
                                           where, load_storage);
    return unpickler.run();
  });
}

namespace detail {

/// The tensors of a dict with string keys; any other value is an error naming its key.
inline StateDict state_dict_of(const PickleValue& dict, const std::string& where) {
  StateDict out;
  for (const auto& [k, v] : dict.entries()) {
    check<FormatError>(k.is(PickleValue::Kind::kString), where, ": state dict key of type ",
                       PickleValue::kind_name(k.kind()), ", expected str");
    check<FormatError>(v.is(PickleValue::Kind::kTensor), where, ": state dict entry '", k.as_string(), "' is a ",
                       PickleValue::kind_name(v.kind()), ", expected a tensor");
    out.emplace(k.as_string(), v.as_tensor());
  }
  return out;
}

inline bool is_tensor_dict(const PickleValue& v) {
  if (!v.is(PickleValue::Kind::kDict)) return false;
  for (const auto& [k, x] : v.entries())
    if (!k.is(PickleValue::Kind::kString) || !x.is(PickleValue::Kind::kTensor)) return false;
  return true;
}

}  // namespace detail

/// Reads the state dict of a PyTorch zip checkpoint (`pytorch_model.bin`, `*.pth`): name -> CPU
/// tensor in the file's dtype. With `key` empty the object must be a dict of tensors, or a dict
/// holding one under "model" (LAVIS's `{"model": state_dict, ...}`) or "state_dict"; otherwise
/// `key` names the entry of the top-level dict that holds it. Throws agla::FormatError.
inline StateDict read_pytorch_checkpoint(const std::string& path, const std::string& key = "") {
  const std::string where = "agla::io::read_pytorch_checkpoint: " + path;
  const PickleValue root = read_pytorch_pickle(path);
  if (!key.empty()) {
    check<FormatError>(root.is(PickleValue::Kind::kDict), where, ": top level is a ",
                       PickleValue::kind_name(root.kind()), ", cannot look up '", key, "'");
    const PickleValue* sub = root.find(key);
    check<FormatError>(sub != nullptr && sub->is(PickleValue::Kind::kDict), where, ": no dict under key '", key, "'");
    return detail::state_dict_of(*sub, where + " [" + key + "]");
  }
  if (detail::is_tensor_dict(root)) return detail::state_dict_of(root, where);
  if (root.is(PickleValue::Kind::kDict)) {
    for (const char* name : {"model", "state_dict"}) {
      const PickleValue* sub = root.find(name);
      if (sub != nullptr && sub->is(PickleValue::Kind::kDict))
        return detail::state_dict_of(*sub, where + " [" + name + "]");
    }
    std::string keys;
    size_t listed = 0;
    for (const auto& [k, v] : root.entries()) {
      if (listed++ == 16) {
        keys += ", ... (" + std::to_string(root.entries().size()) + " keys)";
        break;
      }
      keys +=
          (keys.empty() ? "" : ", ") + (k.is(PickleValue::Kind::kString) ? k.as_string() : std::string("<non-str>"));
    }
    throw FormatError(agla::detail::concat(where, ": top-level dict is not a state dict and has no 'model' or ",
                                           "'state_dict' entry; keys: ", keys, " (pass the key to use)"));
  }
  throw FormatError(agla::detail::concat(where, ": top level is a ", PickleValue::kind_name(root.kind()),
                                         ", expected a dict of tensors"));
}

/// Reads a sharded checkpoint from its `pytorch_model.bin.index.json` (shards next to the index)
/// through the one index reader of `sharded_index.hpp` (its rules: shard names inside the
/// directory, every listed tensor in its shard, every shard tensor listed for it, no name in two
/// shards). Throws agla::FormatError naming the file and tensor.
inline StateDict read_pytorch_checkpoint_index(const std::string& index_json_path) {
  return load_sharded(read_sharded_index(index_json_path),
                      [](const std::string& shard) { return read_pytorch_checkpoint(shard); });
}

}  // namespace agla::io
