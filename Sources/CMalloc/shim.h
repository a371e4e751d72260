#ifndef CMALLOC_SHIM_H
#define CMALLOC_SHIM_H
// glibc's allocator controls (malloc_trim): part of libc, no package to install.
#if __has_include(<malloc.h>)
#include <malloc.h>
#endif
#endif
