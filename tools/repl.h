/* The REPL of `dattn run`: reads lines from stdin (libedit on a terminal, plain reads
 * otherwise) and runs each as a prompt (run_turn.h) or a `:` command. */
#ifndef DATTN_TOOLS_REPL_H
#define DATTN_TOOLS_REPL_H

#include "run_turn.h"

/* The interactive loop (terminal) or the scripted one (anything else) over stdin. Returns the
 * exit status: 0; scripted, 2 when a prompt or a command failed (the REPL still goes on to the
 * end of the input). */
int repl_main(run_state *r, int terminal);

#endif
