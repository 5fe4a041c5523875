/* The OpenCL C sources of cl/, embedded at build time by tools/embed_cl.py. */
#ifndef DATTN_CL_SOURCES_H
#define DATTN_CL_SOURCES_H

typedef struct cl_source {
    const char *name;          /* file name without .cl: "diffattn_decode" */
    const char *text;
} cl_source;

extern const cl_source cl_sources[];
extern const int cl_n_sources;

/* The text of an embedded source, or NULL. */
const char *cl_source_text(const char *name);

#endif
