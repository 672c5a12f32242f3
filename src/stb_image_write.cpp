// stb_image_write's implementation, compiled once for the agla package (agla::stb), in its own
// object file so that a program that links its own stb_image_write keeps it.
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
