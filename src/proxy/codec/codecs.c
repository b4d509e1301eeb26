#include "codecs.h"
#include "h1_client.h"
#include "h1_server.h"
#include "h2.h"
#include "tcp.h"

void rete_codecs_register(void)
{
    rete_codec_register(RETE_CODEC_H2, &rete_codec_h2);
    rete_codec_register(RETE_CODEC_H1_SERVER, &rete_codec_h1_server);
    rete_codec_register(RETE_CODEC_H1_CLIENT, &rete_codec_h1_client);
    rete_codec_register(RETE_CODEC_TCP, &rete_codec_tcp);
}
