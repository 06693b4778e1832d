/* libzstd: zstd layers are one frame per fixed-size chunk, each compressed single-threaded. */
#include <zstd.h>
