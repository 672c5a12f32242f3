// stb_image's implementation, compiled once for the agla package (the static library agla::stb;
// agla/io/image.hpp includes only the declarations). PNG and BMP only: agla decodes JPEG with
// libjpeg as Pillow does (agla/io/jpeg.hpp), and every format left out is parser code that
// untrusted files cannot reach.
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_FAILURE_USERMSG
#include <stb_image.h>
