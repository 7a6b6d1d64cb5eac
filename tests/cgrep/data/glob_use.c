/* cgrep test file: never names its type, reaches it through a header only. */
#include <net/glob.h>

int glob_use(tuple_alias_t *a)
{
	return header_tuple.dst + a->dst + header_tuple_p->dst;
}
