#pragma once
/// \file
/// JPEG decoding with libjpeg(-turbo) exactly as Pillow decodes it (`Image.open(f).convert("RGB")`
/// with Pillow 9.4's JpegImagePlugin and libImaging/JpegDecode.c), used by agla::io::decode_image.
///
/// Pillow's settings: libjpeg's defaults (accurate integer IDCT, fancy upsampling, block smoothing),
/// the output colour space chosen from the component count (1: grey, 3: RGB, 4: CMYK), libjpeg's
/// own detection of the stored colour space (JFIF / Adobe markers, component ids), CMYK read as
/// Adobe-inverted ("CMYK;I") whether or not an Adobe marker says so, then Pillow's `convert("RGB")`
/// (grey replicated; CMYK through libImaging's cmyk2rgb). Pillow's input is a suspending source fed
/// in 64 KiB reads; the source here replays those reads, so the same files are refused: data that
/// ends before the last row of pixels is truncated (Pillow: "image file is truncated"), an error in
/// trailing segments counts only where Pillow's last read reached, and libjpeg's warnings (corrupt
/// entropy data, extraneous bytes) are ignored as Pillow ignores them -- it decodes such files, and
/// the reference pipelines see those pixels.
///
/// Error handling. libjpeg reports a fatal error by calling `error_exit`, which must not return;
/// it is C code that C++ exceptions must not cross. So every libjpeg call runs inside one of the
/// small `jpeg_*_step` functions below, which calls `setjmp` first, and `error_exit` formats the
/// message and `longjmp`s back there. Between each `setjmp` and its `longjmp` there are only libjpeg's
/// frames and the callbacks here, none of which owns an object with a destructor (C++ forbids a
/// longjmp that skips one); all state lives in JpegDecoderState, which is trivially destructible
/// and owned by decode_jpeg's frame, above every setjmp. The C++ side (the pixel tensor, the row
/// scratch buffer, the exception) lives only in decode_jpeg; jpeg_destroy_decompress runs on every
/// path through a guard there and frees all of libjpeg's memory.

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

// After <cstddef> and <cstdio>: jpeglib.h uses size_t and FILE without including their headers.
#include <jpeglib.h>

#include "agla/error.hpp"

namespace agla::io::detail {

/// Pillow reads image files in blocks of this many bytes (ImageFile.MAXBLOCK) and hands the decoder
/// all data read so far; which trailing bytes libjpeg sees when it finishes depends on it.
inline constexpr size_t kJpegReadBlock = 65536;

/// Progressive JPEGs with more scans than this are refused: every scan may revisit the whole image,
/// so a small file of many tiny scans could otherwise cost minutes. Encoders write about 10.
inline constexpr int kMaxJpegScans = 1000;

/// True when the data starts like a JPEG file for Pillow (`FF D8 FF`, JpegImagePlugin._accept).
inline bool is_jpeg(const uint8_t* data, size_t size) {
  return size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
}

/// Everything libjpeg and its callbacks touch during one decode; trivially destructible, so that a
/// longjmp out of libjpeg skips no destructor.
struct JpegDecoderState {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr error;
  jpeg_source_mgr source;
  jpeg_progress_mgr progress;
  std::jmp_buf jump;
  const uint8_t* data;
  size_t size;
  size_t window_end;    ///< bytes [0, window_end) have been "read" (Pillow's reads so far)
  size_t pending_skip;  ///< bytes libjpeg asked to skip beyond the window
  bool created;
  bool too_many_scans;
  char message[JMSG_LENGTH_MAX];
};
static_assert(std::is_trivially_destructible_v<JpegDecoderState>, "longjmp must not skip destructors");

/// What one libjpeg call ended with.
enum class JpegStep { kDone, kSuspended, kFailed };

/// The state a libjpeg callback belongs to (cinfo->client_data).
inline JpegDecoderState& jpeg_state(j_common_ptr cinfo) { return *static_cast<JpegDecoderState*>(cinfo->client_data); }
/// The state a libjpeg source callback belongs to.
inline JpegDecoderState& jpeg_state(j_decompress_ptr cinfo) {
  return *static_cast<JpegDecoderState*>(cinfo->client_data);
}

/// libjpeg's fatal error: keep the message, return to the current step's setjmp.
inline void jpeg_error_exit(j_common_ptr cinfo) {
  JpegDecoderState& state = jpeg_state(cinfo);
  (*cinfo->err->format_message)(cinfo, state.message);
  std::longjmp(state.jump, 1);
}

/// Warnings are counted by libjpeg and otherwise ignored, as Pillow's `output` callback does.
inline void jpeg_ignore_message(j_common_ptr) {}

/// The source's init and term hooks: the data is in memory already.
inline void jpeg_source_noop(j_decompress_ptr) {}

/// The window is exhausted: suspend (Pillow's source does the same and then reads another block).
inline boolean jpeg_fill_input(j_decompress_ptr) { return FALSE; }

/// Skips within the window; the rest of a longer skip is applied as the window grows (as Pillow's).
inline void jpeg_skip_input(j_decompress_ptr cinfo, long count) {
  if (count <= 0) return;
  JpegDecoderState& state = jpeg_state(cinfo);
  const size_t n = static_cast<size_t>(count);
  if (n <= state.source.bytes_in_buffer) {
    state.source.next_input_byte += n;
    state.source.bytes_in_buffer -= n;
  } else {
    state.pending_skip = n - state.source.bytes_in_buffer;
    state.source.next_input_byte += state.source.bytes_in_buffer;
    state.source.bytes_in_buffer = 0;
  }
}

/// Called by libjpeg between units of work; refuses a datastream with too many scans.
inline void jpeg_progress(j_common_ptr cinfo) {
  JpegDecoderState& state = jpeg_state(cinfo);
  if (state.cinfo.input_scan_number > kMaxJpegScans) {
    state.too_many_scans = true;
    std::longjmp(state.jump, 1);
  }
}

/// Extends the window by one of Pillow's reads; false when the data is exhausted.
inline bool jpeg_read_block(JpegDecoderState& state) {
  if (state.window_end >= state.size) return false;
  state.window_end = std::min(state.size, state.window_end + kJpegReadBlock);
  size_t offset = static_cast<size_t>(state.source.next_input_byte - state.data);
  const size_t skip = std::min(state.pending_skip, state.window_end - offset);
  offset += skip;
  state.pending_skip -= skip;
  state.source.next_input_byte = state.data + offset;
  state.source.bytes_in_buffer = state.window_end - offset;
  return true;
}

/// Creates the decompressor and reads the header up to the first scan. Like Pillow, a tables-only
/// datastream (SOI, tables, EOI) is read past and the header of the image after it is read.
inline JpegStep jpeg_header_step(JpegDecoderState& state) {
  if (setjmp(state.jump)) return JpegStep::kFailed;
  if (!state.created) {
    jpeg_create_decompress(&state.cinfo);  // keeps err and client_data, set before
    state.created = true;
    state.cinfo.src = &state.source;
    state.cinfo.progress = &state.progress;
  }
  int status = JPEG_SUSPENDED;
  do {
    status = jpeg_read_header(&state.cinfo, FALSE);
  } while (status == JPEG_HEADER_TABLES_ONLY);
  return status == JPEG_SUSPENDED ? JpegStep::kSuspended : JpegStep::kDone;
}

/// jpeg_start_decompress; a progressive image is read whole here.
inline JpegStep jpeg_start_step(JpegDecoderState& state) {
  if (setjmp(state.jump)) return JpegStep::kFailed;
  return jpeg_start_decompress(&state.cinfo) ? JpegStep::kDone : JpegStep::kSuspended;
}

/// jpeg_read_scanlines into `rows` (at most `count`); `*got` rows were written.
inline JpegStep jpeg_rows_step(JpegDecoderState& state, JSAMPARRAY rows, JDIMENSION count, JDIMENSION* got) {
  if (setjmp(state.jump)) return JpegStep::kFailed;
  *got = jpeg_read_scanlines(&state.cinfo, rows, count);
  return *got == 0 ? JpegStep::kSuspended : JpegStep::kDone;
}

/// jpeg_finish_decompress: reads the markers after the last scan, up to EOI.
inline JpegStep jpeg_finish_step(JpegDecoderState& state) {
  if (setjmp(state.jump)) return JpegStep::kFailed;
  return jpeg_finish_decompress(&state.cinfo) ? JpegStep::kDone : JpegStep::kSuspended;
}

/// Pillow's `MULDIV255(a, b)`: a * b / 255 rounded, in integers.
inline unsigned muldiv255(unsigned a, unsigned b) {
  const unsigned t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

/// Decodes a JPEG (is_jpeg) to RGB uint8 `[H, W, 3]` as Pillow's `Image.open(f).convert("RGB")`.
/// Refuses, with agla::FormatError naming `name`, before allocating pixel memory: a broken or
/// truncated header, component counts other than 1, 3 and 4, images of more than `max_pixels`;
/// then truncated or broken image data. `where` prefixes the messages.
inline at::Tensor decode_jpeg(const uint8_t* data, size_t size, const std::string& name, int64_t max_pixels,
                              const std::string& max_pixels_text, const char* where) {
  JpegDecoderState state{};
  state.data = data;
  state.size = size;
  state.cinfo.err = jpeg_std_error(&state.error);
  state.cinfo.client_data = &state;
  state.error.error_exit = jpeg_error_exit;
  state.error.output_message = jpeg_ignore_message;
  state.source.init_source = jpeg_source_noop;
  state.source.fill_input_buffer = jpeg_fill_input;
  state.source.skip_input_data = jpeg_skip_input;
  state.source.resync_to_restart = jpeg_resync_to_restart;
  state.source.term_source = jpeg_source_noop;
  state.source.next_input_byte = data;
  state.source.bytes_in_buffer = 0;
  state.progress.progress_monitor = jpeg_progress;
  struct Destroy {
    JpegDecoderState& state;
    ~Destroy() {
      if (state.created) jpeg_destroy_decompress(&state.cinfo);
    }
  } destroy{state};

  // Runs a step, giving it Pillow's next block of data each time it suspends; kSuspended only
  // when the data is exhausted.
  auto run = [&state](auto&& step) {
    for (;;) {
      const JpegStep result = step();
      if (result != JpegStep::kSuspended || !jpeg_read_block(state)) return result;
    }
  };
  auto fail = [&](const char* what) {
    check<FormatError>(!state.too_many_scans, where, ": ", name, ": progressive JPEG with more than ", kMaxJpegScans,
                       " scans");
    throw FormatError(agla::detail::concat(where, ": ", name, ": ", what, " (libjpeg: ", state.message, ")"));
  };

  const JpegStep header = run([&] { return jpeg_header_step(state); });
  // The size check comes first whenever the frame header was read, also for a header that is cut
  // short or broken after it.
  const int64_t width = state.cinfo.image_width, height = state.cinfo.image_height;
  check<FormatError>(width * height <= max_pixels, where, ": ", name, ": image of ", width, "x", height,
                     " pixels exceeds the limit of ", max_pixels_text, " pixels");
  if (header == JpegStep::kFailed) fail("not a readable JPEG image");
  check<FormatError>(header == JpegStep::kDone, where, ": ", name,
                     ": truncated JPEG (the data ends inside its header)");
  const int components = state.cinfo.num_components;
  check<FormatError>(components == 1 || components == 3 || components == 4, where, ": ", name, ": JPEG with ",
                     components, " components (1, 3 and 4 are decoded, as by Pillow)");
  // libjpeg's defaults, which Pillow keeps; set here so that they are visible.
  state.cinfo.dct_method = JDCT_ISLOW;
  state.cinfo.do_fancy_upsampling = TRUE;
  state.cinfo.out_color_space = components == 1 ? JCS_GRAYSCALE : components == 3 ? JCS_RGB : JCS_CMYK;

  const char* truncated = "truncated JPEG (the data ends before the last row of pixels)";
  const JpegStep start = run([&] { return jpeg_start_step(state); });
  if (start == JpegStep::kFailed) fail("corrupt JPEG data");
  check<FormatError>(start == JpegStep::kDone, where, ": ", name, ": ", truncated);
  const int64_t out_w = state.cinfo.output_width, out_h = state.cinfo.output_height;
  const int out_components = state.cinfo.output_components;
  check<FormatError>(out_w == width && out_h == height && out_components == components, where, ": ", name,
                     ": header says ", width, "x", height, "x", components, " but libjpeg produces ", out_w, "x", out_h,
                     "x", out_components);

  at::Tensor out = at::empty({height, width, 3}, at::TensorOptions().dtype(at::kByte));
  uint8_t* pixels = out.data_ptr<uint8_t>();
  constexpr JDIMENSION kChunk = 16;
  const size_t row_bytes = static_cast<size_t>(width) * static_cast<size_t>(out_components);
  std::vector<uint8_t> scratch(out_components == 3 ? 0 : kChunk * row_bytes);
  std::array<JSAMPROW, kChunk> rows{};
  while (state.cinfo.output_scanline < state.cinfo.output_height) {
    const JDIMENSION y0 = state.cinfo.output_scanline;
    const JDIMENSION count = std::min<JDIMENSION>(kChunk, state.cinfo.output_height - y0);
    for (JDIMENSION i = 0; i < count; ++i) {
      rows[i] =
          out_components == 3 ? pixels + (static_cast<size_t>(y0) + i) * row_bytes : scratch.data() + i * row_bytes;
    }
    JDIMENSION got = 0;
    const JpegStep step = run([&] { return jpeg_rows_step(state, rows.data(), count, &got); });
    if (step == JpegStep::kFailed) fail("corrupt JPEG data");
    check<FormatError>(step == JpegStep::kDone, where, ": ", name, ": ", truncated);
    for (JDIMENSION i = 0; i < got && out_components != 3; ++i) {
      const uint8_t* in = rows[i];
      uint8_t* dst = pixels + (static_cast<size_t>(y0) + i) * static_cast<size_t>(width) * 3;
      if (out_components == 1) {
        for (int64_t x = 0; x < width; ++x, dst += 3) dst[0] = dst[1] = dst[2] = in[x];
      } else {
        // Pillow stores 255 - v ("CMYK;I"); cmyk2rgb then gives nk - nk * c / 255 with nk = 255 - k.
        for (int64_t x = 0; x < width; ++x, in += 4, dst += 3) {
          const unsigned nk = in[3];
          for (int ch = 0; ch < 3; ++ch) dst[ch] = static_cast<uint8_t>(nk - muldiv255(255u - in[ch], nk));
        }
      }
    }
  }
  // Pillow finishes with the data it has read so far and accepts a suspension here (all rows are
  // out); an error in the markers it reads still refuses the file.
  if (jpeg_finish_step(state) == JpegStep::kFailed) fail("corrupt JPEG data after the image");
  return out;
}

}  // namespace agla::io::detail
