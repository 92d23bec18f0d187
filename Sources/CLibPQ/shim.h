#ifndef DETECTQ_CLIBPQ_SHIM_H
#define DETECTQ_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
