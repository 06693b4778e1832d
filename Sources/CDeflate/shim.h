/* libdeflate: whole-buffer DEFLATE/gzip compression; layers are gzip members of fixed-size chunks. */
#include <libdeflate.h>
