/* Which fields of an exchange's message go into the HTTP/2 header blocks
 * the codec sends (h2.h): the HTTP/1 <-> HTTP/2 field rules, apart from the
 * codec so that they read alone (and fuzz_h1h2_headers checks them). */
#include "h2.h"

static bool is_connection_specific(rete_view name)
{
    /* RFC 9113 §8.2.2 */
    return rete_view_eq(name, RETE_VIEW_LIT("connection")) ||
           rete_view_eq(name, RETE_VIEW_LIT("keep-alive")) ||
           rete_view_eq(name, RETE_VIEW_LIT("proxy-connection")) ||
           rete_view_eq(name, RETE_VIEW_LIT("transfer-encoding")) ||
           rete_view_eq(name, RETE_VIEW_LIT("upgrade"));
}

bool rete_h2_field_forwarded(rete_view name, rete_view value)
{
    if (is_connection_specific(name))
        return false;
    return !rete_view_eq(name, RETE_VIEW_LIT("te")) || rete_view_ieq(value, RETE_VIEW_LIT("trailers"));
}
