/* HTTP status codes: the one reason-phrase table (RFC 9110 §15), used by
 * the proxy's HTTP/1.1 server and by reted's HTTP server. */
#ifndef RETE_HTTP_STATUS_H
#define RETE_HTTP_STATUS_H

/* The reason phrase of `status`, or "Status" for a code the table does not
 * name (a client must ignore the phrase, RFC 9112 §4). Static storage. */
const char *rete_http_reason(int status);

#endif
