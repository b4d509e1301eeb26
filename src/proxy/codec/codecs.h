/* Fill the codec table (core/codec.h) with every codec in this directory.
 * Called once by main.c (and by unit tests) before any worker starts. */
#ifndef RETE_PROXY_CODECS_H
#define RETE_PROXY_CODECS_H

void rete_codecs_register(void);

#endif
