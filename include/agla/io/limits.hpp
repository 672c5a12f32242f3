#pragma once
/// \file
/// The fixed bounds of the io layer, in one place. A reader never allocates more than what the
/// file may legitimately hold (its size, or the tensor bytes its header declares and the file
/// contains) plus what these bounds allow, so a small hostile file cannot make it take much memory
/// or time. Each bound is far above what real checkpoints, configs and tokenizers need
/// (docs/guarantees.md).

#include <cstdint>

namespace agla::io {

/// Largest value a size field of a model config (widths, layer and head counts, image and patch
/// sides, vocabulary, positions) may hold: 2^24.
inline constexpr int64_t kMaxConfigSize = int64_t{1} << 24;

/// Largest JSON file read (`config.json`, sharded `*.index.json`): 64 MiB. The index of a model
/// with 100,000 tensors is about 10 MB.
inline constexpr uint64_t kMaxJsonFileBytes = uint64_t{64} << 20;

/// Most JSON values (objects, arrays, keys, strings, numbers) one JSON document or safetensors
/// header may hold: 2^21, a parsed size of at most a few hundred MB. A config has hundreds; a
/// sharded index two per tensor; a safetensors header about ten per tensor.
inline constexpr uint64_t kMaxJsonValues = uint64_t{1} << 21;

/// Largest safetensors JSON header (the reference Rust implementation uses the same 100 MB cap).
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

/// Most records a PyTorch zip checkpoint may list: 2^20 (torch.save writes one per storage).
inline constexpr uint64_t kMaxZipRecords = uint64_t{1} << 20;

/// Most values the weights-only unpickler builds for one checkpoint (stack pushes, MARKs, memo
/// entries and container insertions together; a new container counts 4): 2^21, at most a few
/// hundred MB. A state dict takes about 70 per tensor, so a file may hold some 30,000 tensors.
inline constexpr uint64_t kMaxPickleValues = uint64_t{1} << 21;

/// Deepest nesting of containers the unpickler builds.
inline constexpr int kMaxPickleDepth = 100;

/// Most dimensions of a tensor in a PyTorch checkpoint or a `.npy` file (NumPy's own limit).
inline constexpr int64_t kMaxTensorDims = 64;

/// Largest `.npy` header (a version 1.0 header cannot be longer).
inline constexpr uint64_t kMaxNpyHeaderBytes = 65535;

/// Largest SentencePiece `tokenizer.model` read: 64 MiB (LLaMA's is 0.5 MB, the largest
/// vocabularies' about 5 MB).
inline constexpr uint64_t kMaxTokenizerModelBytes = uint64_t{64} << 20;

/// Largest image file read: 256 MiB (a 2^28-pixel PNG compresses far below it only when it is
/// nearly uniform; camera JPEGs are a few MB).
inline constexpr uint64_t kMaxImageFileBytes = uint64_t{256} << 20;

/// Largest WordPiece `vocab.txt` read: 64 MiB (BERT's is 0.2 MB).
inline constexpr uint64_t kMaxVocabFileBytes = uint64_t{64} << 20;

/// Most pieces a SentencePiece model may hold: 2^20 (LLaMA has 32,000).
inline constexpr uint64_t kMaxTokenizerPieces = uint64_t{1} << 20;

}  // namespace agla::io
