/* Numbers in a safetensors header's __metadata__ (all values there are strings): one parser for
 * the layer and model loaders, so bounds and messages agree. */
#ifndef DATTN_META_H
#define DATTN_META_H

#include "safetensors.h"

/* The integer under key, in [lo, hi]; absent: fallback, or DATTN_E_FORMAT when required. */
dattn_status meta_long(const st_file *f, const char *key, long lo, long hi, int required,
                       long fallback, long *out);
/* A finite number > 0 under key; absent: fallback. */
dattn_status meta_positive(const st_file *f, const char *key, double fallback, double *out);

#endif
