#include "codec.h"
#include "log.h"

#include <stdlib.h>

static const rete_codec *table[RETE_CODEC_N];

void rete_codec_register(rete_codec_id id, const rete_codec *codec)
{
    if ((unsigned)id >= RETE_CODEC_N)
        abort();
    table[id] = codec;
}

const rete_codec *rete_codec_at(rete_codec_id id)
{
    return (unsigned)id < RETE_CODEC_N ? table[id] : NULL;
}

const rete_codec *rete_codec_get(rete_codec_id id)
{
    const rete_codec *c = rete_codec_at(id);
    if (!c) {
        rete_err("codec %d is not registered (rete_codecs_register was not called)", (int)id);
        abort();
    }
    return c;
}
