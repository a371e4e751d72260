#ifndef CMALLOC_SHIM_H
#define CMALLOC_SHIM_H
// glibc's allocator controls (malloc_trim): part of libc, no package to install.
#include <malloc.h>
#endif
