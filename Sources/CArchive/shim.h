#include <archive.h>
#include <archive_entry.h>
/* The layer applier restores extended attributes from archives; Swift's Glibc module lacks these. */
#include <sys/xattr.h>
