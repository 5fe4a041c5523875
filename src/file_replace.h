/* Writing an output file so that a failure never costs the user what was there: the bytes go to a
 * temporary file in the target's directory, which is renamed over the target only once every
 * write, the flush and the fsync have succeeded. A failed write removes only that temporary.
 *
 *   file_replace fr;
 *   dattn_status st = file_replace_open(&fr, path);
 *   if (st != DATTN_OK) return st;
 *   if (fwrite(buf, 1, n, fr.f) != n) { file_replace_abort(&fr); return dattn_fail(...); }
 *   return file_replace_commit(&fr);   // also cleans up when it fails
 *
 * Targets that exist and are not regular files (/dev/full, /dev/stdout, a FIFO) are written
 * directly and never renamed over or removed; a failure is only reported. A symlink to a file is
 * followed: the file it points to is replaced, the link stays. A dangling symlink is written
 * through (as fopen would, creating the file it names). Replacing gives the new file the old
 * one's permission bits (and, where allowed, its owner); a new file gets 0666 less the umask, as
 * fopen would. Hard links to the old file keep the old contents. Errors are DATTN_E_IO (or
 * DATTN_E_NOMEM) with a message naming the path and the system's reason. */
#ifndef DATTN_FILE_REPLACE_H
#define DATTN_FILE_REPLACE_H

#include <stdio.h>

#include "dattn.h"

typedef struct file_replace {
    FILE *f;            /* write here; NULL once committed or aborted */
    char *target;       /* the path renamed over (symlinks resolved), or the path written */
    char *tmp;          /* the temporary's path; NULL when writing the target directly */
} file_replace;

/* Opens fr->f for writing (binary). On failure nothing was created and fr->f is NULL. */
dattn_status file_replace_open(file_replace *fr, const char *path);
/* Flushes, syncs, closes and renames the temporary over the target. Whether it succeeds or not,
 * fr is finished afterwards (on failure the temporary is removed and the target is untouched).
 * A write error earlier on fr->f (ferror) makes it fail too. */
dattn_status file_replace_commit(file_replace *fr);
/* Closes and removes the temporary (only ever the one file_replace_open created); the target is
 * untouched. Safe on a finished or zeroed fr. Sets no error message. */
void file_replace_abort(file_replace *fr);

#endif
