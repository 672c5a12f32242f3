#pragma once
/// \file
/// ShapesWorld texts: captions that list a scene's objects ("a red circle and a blue star") and
/// POPE's yes/no question ("Is there a star in the image?").

#include <string>
#include <vector>

#include "agla/error.hpp"
#include "agla/shapesworld/world.hpp"

namespace agla::shapesworld {

/// The class name of `shape` ("circle"); throws `InvalidArgument` outside 0..kNumShapes-1.
inline std::string shape_name(int shape) {
  check<InvalidArgument>(shape >= 0 && shape < kNumShapes, "agla::shapesworld::shape_name: class ", shape,
                         " out of range 0..", kNumShapes - 1);
  return kShapeNames[static_cast<std::size_t>(shape)];
}

/// The indefinite article for a lower-case word ("an" before a vowel letter).
inline const char* article(const std::string& word) {
  return !word.empty() && std::string("aeiou").find(word[0]) != std::string::npos ? "an" : "a";
}

/// "a red circle": the noun phrase of one object.
inline std::string object_phrase(const SceneObject& object) {
  check<InvalidArgument>(object.colour >= 0 && object.colour < kNumColours, "agla::shapesworld::object_phrase: colour ",
                         object.colour, " out of range 0..", kNumColours - 1);
  const std::string colour = kColours[static_cast<std::size_t>(object.colour)].name;
  return std::string(article(colour)) + " " + colour + " " + shape_name(object.shape);
}

/// Caption listing `objects` in order: "a red circle", "a red circle and a blue star",
/// "a red circle, a blue star and a white ring".
inline std::string caption(const std::vector<SceneObject>& objects) {
  std::string out;
  for (std::size_t i = 0; i < objects.size(); ++i) {
    if (i > 0) out += i + 1 == objects.size() ? " and " : ", ";
    out += object_phrase(objects[i]);
  }
  return out;
}

/// Caption of a scene (its objects left to right).
inline std::string caption(const Scene& scene) { return caption(scene.objects); }

/// POPE's question for `shape`: "Is there a star in the image?".
inline std::string question(int shape) {
  const std::string name = shape_name(shape);
  return std::string("Is there ") + article(name) + " " + name + " in the image?";
}

/// The distinct classes present in `objects`, in ascending class order.
inline std::vector<int> present_shapes(const std::vector<SceneObject>& objects) {
  std::vector<int> out;
  for (int c = 0; c < kNumShapes; ++c)
    for (const SceneObject& o : objects)
      if (o.shape == c) {
        out.push_back(c);
        break;
      }
  return out;
}

/// A yes/no training question about a scene.
struct YesNoQuestion {
  int shape = 0;        ///< the asked class
  bool answer = false;  ///< true: the class is present
  std::string text;     ///< `question(shape)`
};

/// A training question for `scene`: with probability 1/2 about a present class (answer yes),
/// otherwise about a uniformly chosen absent class (answer no); both chosen uniformly.
inline YesNoQuestion sample_question(const Scene& scene, Rng& rng) {
  const std::vector<int> present = present_shapes(scene.objects);
  std::vector<int> absent;
  for (int c = 0; c < kNumShapes; ++c)
    if (!scene.has(c)) absent.push_back(c);
  const bool yes = absent.empty() || (!present.empty() && rng.chance(0.5));
  const std::vector<int>& from = yes ? present : absent;
  check<InvalidArgument>(!from.empty(), "agla::shapesworld::sample_question: the scene has no objects");
  YesNoQuestion q;
  q.shape = from[static_cast<std::size_t>(rng.below(from.size()))];
  q.answer = yes;
  q.text = question(q.shape);
  return q;
}

}  // namespace agla::shapesworld
