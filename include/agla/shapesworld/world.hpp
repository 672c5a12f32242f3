#pragma once
/// \file
/// ShapesWorld: a seeded synthetic world of flat shapes in which small vision-language models
/// learn a co-occurrence bias, so that decoding methods can be measured on object hallucination
/// offline (docs/design.md §5). A scene is sampled as a `Layout` (classes, colours, positions,
/// background, clutter, noise seed) and rendered to RGB uint8 `[H, W, 3]` with a per-pixel object
/// label map. All geometry and colour arithmetic is integer, so the bytes are the same on every
/// platform and compiler; no libtorch is needed.

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/shapesworld/random.hpp"

namespace agla::shapesworld {

/// The shape classes. Eight is the upper end the feasibility study advises (perception, not the
/// bias, is what small models struggle with).
enum Shape : int { Circle = 0, Square, Triangle, Star, Cross, Ring, Diamond, Heart };

/// Number of shape classes.
inline constexpr int kNumShapes = 8;

/// Lower-case class names, indexed by `Shape` (the words used in captions and questions).
inline constexpr std::array<const char*, kNumShapes> kShapeNames = {"circle", "square", "triangle", "star",
                                                                    "cross",  "ring",   "diamond",  "heart"};

/// A named, saturated object colour (RGB, 0..255).
struct Colour {
  const char* name;
  std::uint8_t r, g, b;
};

/// The object palette: saturated colours that stand out from the muted backgrounds.
inline constexpr std::array<Colour, 6> kColours = {{{"red", 220, 45, 45},
                                                    {"green", 50, 185, 70},
                                                    {"blue", 60, 100, 235},
                                                    {"yellow", 240, 215, 50},
                                                    {"purple", 165, 70, 215},
                                                    {"white", 240, 240, 240}}};

/// Number of object colours.
inline constexpr int kNumColours = static_cast<int>(kColours.size());

/// Which class distribution a scene is drawn from.
enum class Distribution {
  Biased,    ///< training: popular classes weighted up, and each pair's partner added with `pair_probability`
  Control,   ///< training control: `Biased` scenes with their paired classes re-drawn at random (no pairing)
  Unbiased,  ///< evaluation: every class equally likely, independent
};

/// Two classes that co-occur in the biased training distribution (the relation is symmetric).
struct ShapePair {
  int a;
  int b;
};

/// Everything that defines the world: image size, object counts and sizes, clutter, noise, bias.
struct WorldOptions {
  int height = 64;           ///< image height in pixels (32..512)
  int width = 64;            ///< image width in pixels (32..512)
  int min_objects = 1;       ///< objects per scene, at least
  int max_objects = 4;       ///< objects per scene, at most (<= number of classes)
  int min_radius = 0;        ///< object radius in pixels; 0: 7/64 of the shorter side
  int max_radius = 0;        ///< object radius in pixels; 0: 11/64 of the shorter side
  int gap = 2;               ///< minimum free pixels between two objects' discs
  int colour_jitter = 15;    ///< per-object brightness offset, uniform in [-j, j] levels
  int max_lines = 2;         ///< clutter: thin lines, 0..max per scene
  int max_dots = 3;          ///< clutter: 3x3-pixel dots (radius 1, scaled with the side), 0..max
  int max_blobs = 2;         ///< clutter: radius-2 blobs (scaled with the side), 0..max
  int noise_half_width = 8;  ///< per-channel noise: sum of 4 uniform ints in [-h, h] (sd 9.8 levels at h = 8)
  std::vector<ShapePair> pairs = {{Star, Heart}, {Cross, Ring}, {Triangle, Diamond}};  ///< co-occurring pairs
  /// Biased: chance that drawing one member of a pair brings the other (gives P(B|A) ~ 0.90).
  double pair_probability = 0.82;
  std::vector<int> popular = {Circle, Square};  ///< classes drawn `popular_weight` times as often in training
  int popular_weight = 2;                       ///< relative weight of the popular classes (1: none popular)
};

/// Half-open pixel box `[x0, x1) x [y0, y1)`.
struct Box {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

/// One object of a scene. `box` and `area` are filled in by `render`.
struct SceneObject {
  int shape = 0;                      ///< a `Shape`
  int colour = 0;                     ///< index into `kColours`
  int cx = 0, cy = 0;                 ///< centre (pixel column, row)
  int radius = 0;                     ///< pixels; the shape fits in the disc of this radius
  std::array<std::uint8_t, 3> rgb{};  ///< drawn colour (palette colour plus jitter)
  Box box;                            ///< tight box of the object's pixels
  int area = 0;                       ///< number of the object's pixels
};

/// A clutter element drawn under the objects (never labelled).
struct Clutter {
  /// A one-pixel line or a filled disc (dot or blob).
  enum Kind { Line, Disc } kind = Line;
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  ///< line end points, or the disc centre in (x0, y0)
  int radius = 0;                      ///< disc radius
  std::array<std::uint8_t, 3> rgb{};   ///< colour (a tinted grey)
};

/// A linear colour gradient from `from` to `to` along `direction` (0 left-right, 1 top-bottom,
/// 2 diagonal, 3 anti-diagonal).
struct Background {
  std::array<std::uint8_t, 3> from{}, to{};  ///< colours at the start and end of the gradient
  int direction = 0;                         ///< 0 left-right, 1 top-bottom, 2 diagonal, 3 anti-diagonal
};

/// Everything random about a scene; `render` turns it into pixels deterministically.
struct Layout {
  int height = 0, width = 0;         ///< image size in pixels
  std::vector<SceneObject> objects;  ///< left to right (by centre column, then row)
  Background background;             ///< the gradient under everything
  std::vector<Clutter> clutter;      ///< drawn over the background, under the objects
  std::uint64_t noise_seed = 0;      ///< seeds the per-pixel noise (kept by `without_object`)
  int noise_half_width = 0;          ///< see `WorldOptions::noise_half_width`
};

/// A rendered scene: RGB uint8 `[H, W, 3]` (row-major, channels last) and the object label map
/// `[H, W]` (int8: object index, or -1 for background and clutter).
struct Scene {
  int height = 0, width = 0;         ///< image size in pixels
  std::vector<std::uint8_t> rgb;     ///< `[H, W, 3]` uint8, row-major
  std::vector<std::int8_t> labels;   ///< `[H, W]` object index or -1
  std::vector<SceneObject> objects;  ///< with `box` and `area` filled in

  /// True when an object of class `shape` is in the scene.
  bool has(int shape) const {
    return std::any_of(objects.begin(), objects.end(), [&](const SceneObject& o) { return o.shape == shape; });
  }
};

/// The class paired with `shape` in `options.pairs`, or -1 when it has none.
inline int partner_of(int shape, const WorldOptions& options) {
  for (const ShapePair& p : options.pairs) {
    if (p.a == shape) return p.b;
    if (p.b == shape) return p.a;
  }
  return -1;
}

/// True when `shape` is one of `options.popular`.
inline bool is_popular(int shape, const WorldOptions& options) {
  return std::find(options.popular.begin(), options.popular.end(), shape) != options.popular.end();
}

/// The object radius range of `options` in pixels, after resolving the 0 = automatic defaults.
inline std::array<int, 2> radius_range(const WorldOptions& options) {
  const int side = std::min(options.height, options.width);
  const int lo = options.min_radius > 0 ? options.min_radius : std::max(3, 7 * side / 64);
  const int hi = options.max_radius > 0 ? options.max_radius : std::max(lo, 11 * side / 64);
  return {lo, hi};
}

/// Throws `InvalidArgument` naming the field when `options` is not a usable world.
inline void validate(const WorldOptions& options) {
  const char* fn = "agla::shapesworld::validate: ";
  check<InvalidArgument>(options.height >= 32 && options.height <= 512 && options.width >= 32 && options.width <= 512,
                         fn, "image size must be within 32..512 pixels; got ", options.height, "x", options.width);
  check<InvalidArgument>(
      options.min_objects >= 1 && options.min_objects <= options.max_objects && options.max_objects <= kNumShapes, fn,
      "need 1 <= min_objects <= max_objects <= ", kNumShapes, "; got ", options.min_objects, "..", options.max_objects);
  const auto [lo, hi] = radius_range(options);
  // 80 keeps the heart's sixth-degree integer test inside int64.
  check<InvalidArgument>(lo >= 3 && lo <= hi && hi <= 80 && 2 * hi + 2 < std::min(options.height, options.width), fn,
                         "object radius range must satisfy 3 <= min <= max <= 80 and fit the image; got ", lo, "..", hi,
                         " for ", options.height, "x", options.width);
  check<InvalidArgument>(options.gap >= 0, fn, "gap must be >= 0; got ", options.gap);
  check<InvalidArgument>(options.colour_jitter >= 0 && options.colour_jitter <= 64, fn,
                         "colour_jitter must be within 0..64; got ", options.colour_jitter);
  check<InvalidArgument>(options.max_lines >= 0 && options.max_dots >= 0 && options.max_blobs >= 0, fn,
                         "clutter counts must be >= 0");
  check<InvalidArgument>(options.noise_half_width >= 0 && options.noise_half_width <= 64, fn,
                         "noise_half_width must be within 0..64; got ", options.noise_half_width);
  check<InvalidArgument>(options.pair_probability >= 0.0 && options.pair_probability <= 1.0, fn,
                         "pair_probability must be within [0, 1]; got ", options.pair_probability);
  check<InvalidArgument>(options.popular_weight >= 1, fn, "popular_weight must be >= 1; got ", options.popular_weight);
  std::array<int, kNumShapes> used{};
  for (const ShapePair& p : options.pairs) {
    check<InvalidArgument>(p.a >= 0 && p.a < kNumShapes && p.b >= 0 && p.b < kNumShapes && p.a != p.b, fn,
                           "a pair must name two different classes in 0..", kNumShapes - 1, "; got (", p.a, ", ", p.b,
                           ")");
    for (int c : {p.a, p.b})
      check<InvalidArgument>(used[c]++ == 0, fn, "a class may belong to one pair only; ", kShapeNames[c], " is in two");
  }
  for (int c : options.popular) {
    check<InvalidArgument>(c >= 0 && c < kNumShapes, fn, "popular class out of range: ", c);
    check<InvalidArgument>(partner_of(c, options) < 0, fn, "popular class ", kShapeNames[c],
                           " must not belong to a pair (popularity and co-occurrence are measured apart)");
  }
}

namespace detail {

inline std::uint8_t clamp_u8(int v) { return static_cast<std::uint8_t>(std::clamp(v, 0, 255)); }

/// The star's ten vertices on the unit circle scaled by 1000 (outer radius 1000, inner 500),
/// starting at the top point, clockwise in image coordinates (y down).
inline constexpr std::array<std::array<int, 2>, 10> kStarVertices = {{{0, -1000},
                                                                      {294, -405},
                                                                      {951, -309},
                                                                      {476, 155},
                                                                      {588, 809},
                                                                      {0, 500},
                                                                      {-588, 809},
                                                                      {-476, 155},
                                                                      {-951, -309},
                                                                      {-294, -405}}};

inline bool inside_star(std::int64_t dx, std::int64_t dy, std::int64_t r) {
  // Crossing-number test in units of 1/1000 pixel; the vertical offset centres the star's extent.
  const std::int64_t px = dx * 1000, py = (dy - r / 10) * 1000;
  bool inside = false;
  for (std::size_t i = 0, j = kStarVertices.size() - 1; i < kStarVertices.size(); j = i++) {
    const std::int64_t xi = kStarVertices[i][0] * r, yi = kStarVertices[i][1] * r;
    const std::int64_t xj = kStarVertices[j][0] * r, yj = kStarVertices[j][1] * r;
    if ((yi > py) != (yj > py)) {
      // px < xi + (xj - xi) * (py - yi) / (yj - yi), without division.
      const std::int64_t lhs = (px - xi) * (yj - yi);
      const std::int64_t rhs = (xj - xi) * (py - yi);
      if (yj > yi ? lhs < rhs : lhs > rhs) inside = !inside;
    }
  }
  return inside;
}

}  // namespace detail

/// True when the pixel at offset `(dx, dy)` from an object's centre belongs to a `shape` of
/// radius `r` (integer tests only; each shape fits in the disc of radius `r`).
inline bool inside_shape(int shape, int dx, int dy, int r) {
  const std::int64_t x = dx, y = dy, R = r;
  switch (shape) {
    case Circle:
      return x * x + y * y <= R * R + R;  // r + 1/2 rounds the outline (no single-pixel tips)
    case Square:
      return 10 * std::max(std::abs(x), std::abs(y)) <= 7 * R;
    case Triangle: {
      // Equilateral, apex up, inscribed in the disc: apex (0, -r), base corners (+-0.866 r, r / 2).
      const std::int64_t h = y + R;
      return 2 * y <= R && h >= 0 && 3 * x * x <= h * h;
    }
    case Star:
      return detail::inside_star(x, y, R);
    case Cross: {
      // Plus sign: arms 0.95 r long and 2r/3 thick.
      const std::int64_t ax = std::abs(x), ay = std::abs(y);
      return (20 * ax <= 19 * R && 3 * ay <= R) || (20 * ay <= 19 * R && 3 * ax <= R);
    }
    case Ring: {
      // Annulus with inner radius 0.55 r.
      const std::int64_t d2 = x * x + y * y;
      return d2 <= R * R + R && 400 * d2 >= 121 * R * R;
    }
    case Diamond:
      return std::abs(x) + std::abs(y) <= R;
    case Heart: {
      // (X^2 + Y^2 - 1)^3 <= X^2 Y^3 with X = 11 dx / 9r, Y = (r - 11 dy) / 9r, times (9r)^6.
      const std::int64_t hx = 11 * x, hy = R - 11 * y, s = 9 * R;
      const std::int64_t q = hx * hx + hy * hy - s * s;
      return q * q * q <= hx * hx * hy * hy * hy * s;
    }
    default:
      throw InvalidArgument(agla::detail::concat("agla::shapesworld::inside_shape: unknown class ", shape,
                                                 "; expected 0..", kNumShapes - 1));
  }
}

namespace detail {

/// The biased draw (see `sample_shapes`), or the unpaired one when `paired` is false.
inline std::vector<int> draw_shapes(Rng& rng, const WorldOptions& options, const std::array<int, kNumShapes>& weight,
                                    bool paired) {
  int target = rng.between(options.min_objects, options.max_objects);
  std::array<bool, kNumShapes> present{};
  std::vector<int> shapes;
  int redraws = 0;
  while (static_cast<int>(shapes.size()) < target) {
    int total = 0;
    for (int c = 0; c < kNumShapes; ++c) total += present[c] ? 0 : weight[c];
    int pick = static_cast<int>(rng.below(static_cast<std::uint64_t>(total)));
    int shape = 0;
    for (; shape < kNumShapes; ++shape) {
      if (present[shape]) continue;
      if (pick < weight[shape]) break;
      pick -= weight[shape];
    }
    const int partner = partner_of(shape, options);
    if (paired && partner >= 0 && !present[partner] && rng.chance(options.pair_probability)) {
      if (target - static_cast<int>(shapes.size()) < 2) {
        if (target < options.max_objects) {
          ++target;
        } else if (++redraws < 64) {
          continue;
        } else {
          present[shape] = true;
          shapes.push_back(shape);
          continue;
        }
      }
      present[shape] = present[partner] = true;
      shapes.push_back(shape);
      shapes.push_back(partner);
      continue;
    }
    present[shape] = true;
    shapes.push_back(shape);
  }
  return shapes;
}

}  // namespace detail

/// Draws the classes of one scene (distinct, in drawing order) from `distribution`.
/// Biased: popular classes have weight `popular_weight`; whenever a paired class is drawn while
/// its partner is absent, the partner joins with probability `pair_probability` (taking one more
/// object slot when the scene is full and below `max_objects`, otherwise the draw is repeated), so
/// P(B | A) ~ 0.90 at the default 0.82 while both members of a pair keep the same frequency.
/// Control: a biased draw whose paired classes are then replaced by a uniformly random set of
/// paired classes of the same size, so object counts and class frequencies match the biased
/// world but a partner is no likelier than any other paired class.
/// Unbiased: every class weight 1, no pairing.
inline std::vector<int> sample_shapes(Rng& rng, const WorldOptions& options, Distribution distribution) {
  std::array<int, kNumShapes> weight{};
  for (int c = 0; c < kNumShapes; ++c)
    weight[c] = distribution != Distribution::Unbiased && is_popular(c, options) ? options.popular_weight : 1;
  std::vector<int> shapes = detail::draw_shapes(rng, options, weight, distribution != Distribution::Unbiased);
  if (distribution == Distribution::Control) {
    std::vector<int> pool;
    for (const ShapePair& p : options.pairs) {
      pool.push_back(p.a);
      pool.push_back(p.b);
    }
    for (int& shape : shapes) {
      if (partner_of(shape, options) < 0) continue;
      const std::size_t k = static_cast<std::size_t>(rng.below(pool.size()));
      shape = pool[k];
      pool.erase(pool.begin() + static_cast<std::ptrdiff_t>(k));
    }
  }
  return shapes;
}

/// Samples everything random about scene `seed` (classes from `distribution`, then sizes,
/// colours, non-overlapping positions, background, clutter and the noise seed).
inline Layout sample_layout(std::uint64_t seed, const WorldOptions& options, Distribution distribution) {
  validate(options);
  Rng rng(seed);
  Layout layout;
  layout.height = options.height;
  layout.width = options.width;
  layout.noise_half_width = options.noise_half_width;
  const std::vector<int> shapes = sample_shapes(rng, options, distribution);
  const auto [r_lo, r_hi] = radius_range(options);

  // Rejection placement; a full restart when one object finds no room keeps the draw simple.
  bool placed = false;
  for (int attempt = 0; attempt < 100 && !placed; ++attempt) {
    layout.objects.clear();
    placed = true;
    for (int shape : shapes) {
      SceneObject object;
      object.shape = shape;
      object.radius = rng.between(r_lo, r_hi);
      object.colour = static_cast<int>(rng.below(kNumColours));
      const int jitter = rng.between(-options.colour_jitter, options.colour_jitter);
      const Colour& colour = kColours[object.colour];
      object.rgb = {detail::clamp_u8(colour.r + jitter), detail::clamp_u8(colour.g + jitter),
                    detail::clamp_u8(colour.b + jitter)};
      bool found = false;
      for (int tries = 0; tries < 100 && !found; ++tries) {
        object.cx = rng.between(object.radius + 1, options.width - 2 - object.radius);
        object.cy = rng.between(object.radius + 1, options.height - 2 - object.radius);
        found = std::all_of(layout.objects.begin(), layout.objects.end(), [&](const SceneObject& other) {
          const std::int64_t dx = object.cx - other.cx, dy = object.cy - other.cy;
          const std::int64_t d = object.radius + other.radius + options.gap;
          return dx * dx + dy * dy > d * d;
        });
      }
      if (!found) {
        placed = false;
        break;
      }
      layout.objects.push_back(object);
    }
  }
  check<InvalidArgument>(placed, "agla::shapesworld::sample_layout: cannot place ", shapes.size(),
                         " objects of radius ", r_lo, "..", r_hi, " in ", options.height, "x", options.width,
                         "; use a larger image, smaller radii or fewer objects");
  std::sort(layout.objects.begin(), layout.objects.end(),
            [](const SceneObject& a, const SceneObject& b) { return a.cx != b.cx ? a.cx < b.cx : a.cy < b.cy; });

  // Muted backgrounds (a grey level with a mild tint) keep the saturated objects visible; the
  // gradient varies them.
  const int grey_from = rng.between(30, 140), grey_to = std::clamp(grey_from + rng.between(-50, 50), 15, 160);
  for (int ch = 0; ch < 3; ++ch) {
    layout.background.from[ch] = detail::clamp_u8(grey_from + rng.between(-25, 25));
    layout.background.to[ch] = detail::clamp_u8(grey_to + rng.between(-25, 25));
  }
  layout.background.direction = rng.between(0, 3);

  const int side = std::min(options.height, options.width);
  const auto clutter_colour = [&] {
    const int grey = rng.between(40, 200);
    std::array<std::uint8_t, 3> rgb{};
    for (int ch = 0; ch < 3; ++ch) rgb[ch] = detail::clamp_u8(grey + rng.between(-25, 25));
    return rgb;
  };
  const int lines = rng.between(0, options.max_lines);
  for (int i = 0; i < lines; ++i) {
    Clutter c;
    c.kind = Clutter::Line;
    c.x0 = rng.between(0, options.width - 1);
    c.y0 = rng.between(0, options.height - 1);
    c.x1 = rng.between(0, options.width - 1);
    c.y1 = rng.between(0, options.height - 1);
    c.rgb = clutter_colour();
    layout.clutter.push_back(c);
  }
  const int dots = rng.between(0, options.max_dots);
  const int blobs = rng.between(0, options.max_blobs);
  for (int i = 0; i < dots + blobs; ++i) {
    Clutter c;
    c.kind = Clutter::Disc;
    c.radius = std::max(1, (i < dots ? 1 : 2) * side / 64);
    c.x0 = rng.between(0, options.width - 1);
    c.y0 = rng.between(0, options.height - 1);
    c.rgb = clutter_colour();
    layout.clutter.push_back(c);
  }
  layout.noise_seed = rng.next();
  return layout;
}

/// The same layout without object `index` (everything else, noise included, unchanged): the
/// counterfactual image of the within-class contrast.
inline Layout without_object(const Layout& layout, std::size_t index) {
  check<InvalidArgument>(index < layout.objects.size(), "agla::shapesworld::without_object: index ", index,
                         " out of range for ", layout.objects.size(), " objects");
  Layout out = layout;
  out.objects.erase(out.objects.begin() + static_cast<std::ptrdiff_t>(index));
  return out;
}

/// Renders `layout`: gradient background, clutter, objects (which define the label map), then
/// per-channel noise over everything. Integer arithmetic only.
inline Scene render(const Layout& layout) {
  check<InvalidArgument>(layout.height > 0 && layout.width > 0 && layout.objects.size() <= 127,
                         "agla::shapesworld::render: bad layout (", layout.height, "x", layout.width, ", ",
                         layout.objects.size(), " objects)");
  const int H = layout.height, W = layout.width;
  Scene scene;
  scene.height = H;
  scene.width = W;
  scene.rgb.assign(static_cast<std::size_t>(H) * W * 3, 0);
  scene.labels.assign(static_cast<std::size_t>(H) * W, -1);
  scene.objects = layout.objects;
  const auto put = [&](int x, int y, const std::array<std::uint8_t, 3>& rgb) {
    if (x < 0 || y < 0 || x >= W || y >= H) return;
    std::uint8_t* p = &scene.rgb[(static_cast<std::size_t>(y) * W + x) * 3];
    p[0] = rgb[0];
    p[1] = rgb[1];
    p[2] = rgb[2];
  };

  const Background& bg = layout.background;
  const int span = bg.direction == 0 ? W - 1 : bg.direction == 1 ? H - 1 : W + H - 2;
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) {
      const int t = bg.direction == 0 ? x : bg.direction == 1 ? y : bg.direction == 2 ? x + y : (W - 1 - x) + y;
      std::array<std::uint8_t, 3> rgb{};
      for (int ch = 0; ch < 3; ++ch) rgb[ch] = detail::clamp_u8(bg.from[ch] + (bg.to[ch] - bg.from[ch]) * t / span);
      put(x, y, rgb);
    }
  }

  for (const Clutter& c : layout.clutter) {
    if (c.kind == Clutter::Line) {
      // Bresenham, one pixel wide.
      int x = c.x0, y = c.y0;
      const int dx = std::abs(c.x1 - c.x0), dy = -std::abs(c.y1 - c.y0);
      const int sx = c.x0 < c.x1 ? 1 : -1, sy = c.y0 < c.y1 ? 1 : -1;
      int err = dx + dy;
      while (true) {
        put(x, y, c.rgb);
        if (x == c.x1 && y == c.y1) break;
        const int e2 = 2 * err;
        if (e2 >= dy) {
          err += dy;
          x += sx;
        }
        if (e2 <= dx) {
          err += dx;
          y += sy;
        }
      }
    } else {
      for (int y = -c.radius; y <= c.radius; ++y)
        for (int x = -c.radius; x <= c.radius; ++x)
          if (x * x + y * y <= c.radius * c.radius + c.radius) put(c.x0 + x, c.y0 + y, c.rgb);
    }
  }

  for (std::size_t i = 0; i < scene.objects.size(); ++i) {
    SceneObject& o = scene.objects[i];
    o.box = Box{W, H, 0, 0};
    o.area = 0;
    for (int y = std::max(0, o.cy - o.radius); y <= std::min(H - 1, o.cy + o.radius); ++y) {
      for (int x = std::max(0, o.cx - o.radius); x <= std::min(W - 1, o.cx + o.radius); ++x) {
        if (!inside_shape(o.shape, x - o.cx, y - o.cy, o.radius)) continue;
        put(x, y, o.rgb);
        scene.labels[static_cast<std::size_t>(y) * W + x] = static_cast<std::int8_t>(i);
        o.box.x0 = std::min(o.box.x0, x);
        o.box.y0 = std::min(o.box.y0, y);
        o.box.x1 = std::max(o.box.x1, x + 1);
        o.box.y1 = std::max(o.box.y1, y + 1);
        ++o.area;
      }
    }
    if (o.area == 0) o.box = Box{};
  }

  if (layout.noise_half_width > 0) {
    // Irwin-Hall noise: four 16-bit slices of one engine draw, each mapped to [-h, h].
    const std::uint64_t levels = 2 * static_cast<std::uint64_t>(layout.noise_half_width) + 1;
    Rng noise(layout.noise_seed);
    for (std::uint8_t& v : scene.rgb) {
      const std::uint64_t bits = noise.next();
      int sum = 0;
      for (int k = 0; k < 4; ++k)
        sum += static_cast<int>((((bits >> (16 * k)) & 0xFFFFu) * levels) >> 16) - layout.noise_half_width;
      v = detail::clamp_u8(v + sum);
    }
  }
  return scene;
}

/// Samples and renders scene `seed` of `distribution`.
inline Scene generate_scene(std::uint64_t seed, const WorldOptions& options, Distribution distribution) {
  return render(sample_layout(seed, options, distribution));
}

/// Pixel mask of object `index`: `[H, W]` uint8, 1 where the object is visible, else 0.
inline std::vector<std::uint8_t> object_mask(const Scene& scene, std::size_t index) {
  check<InvalidArgument>(index < scene.objects.size(), "agla::shapesworld::object_mask: index ", index,
                         " out of range for ", scene.objects.size(), " objects");
  std::vector<std::uint8_t> mask(scene.labels.size());
  for (std::size_t p = 0; p < mask.size(); ++p) mask[p] = scene.labels[p] == static_cast<int>(index) ? 1 : 0;
  return mask;
}

/// Per-patch class pixel counts on a `grid x grid` patch grid: `[grid, grid, kNumShapes]` int
/// (row-major): how many pixels of each class every patch holds (dense pre-training targets).
inline std::vector<int> patch_class_pixels(const Scene& scene, int grid) {
  check<InvalidArgument>(grid >= 1 && scene.height % grid == 0 && scene.width % grid == 0,
                         "agla::shapesworld::patch_class_pixels: grid must divide the image size; got grid ", grid,
                         " for ", scene.height, "x", scene.width);
  const int ph = scene.height / grid, pw = scene.width / grid;
  std::vector<int> counts(static_cast<std::size_t>(grid) * grid * kNumShapes, 0);
  for (int y = 0; y < scene.height; ++y) {
    for (int x = 0; x < scene.width; ++x) {
      const int label = scene.labels[static_cast<std::size_t>(y) * scene.width + x];
      if (label < 0) continue;
      const int shape = scene.objects[static_cast<std::size_t>(label)].shape;
      ++counts[(static_cast<std::size_t>(y / ph) * grid + x / pw) * kNumShapes + shape];
    }
  }
  return counts;
}

}  // namespace agla::shapesworld
