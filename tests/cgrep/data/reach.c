/* cgrep test file: the ways of reaching member "dst" of struct tuple. */
#include <net/conn.h>
#include "local.h"

typedef struct tuple tuple_t;
typedef struct tuple *tuple_p;

struct tuple gtuple;

struct tuple *tuple_get(int n);

int reach(struct conn *ct, tuple_t *tt, tuple_p tp, struct tuple **pp, void *opaque,
	  struct tuple arr[], int dir)
{
	struct tuple local;
	struct holder *h = container_of(opaque, struct holder, link);
	int x = 0;

	x += ct->tuplehash[dir].tuple.dst;
	x += tt->dst;
	x += tp->dst;
	x += (*pp)->dst;
	x += pp[1]->dst;
	x += local.dst;
	x += gtuple.dst;
	x += arr[dir].dst;
	x += (*tt).dst;
	x += ((struct tuple *)opaque)->dst;
	x += READ_ONCE(tt)->dst;
	x += tuple_get(1)->dst;
	x += h->t.dst;
	x += h->anon_dst;
	x += conn_tuple(ct)->dst;
	x += ct->orig->dst;
	x += unknown->dst;
	x += ((struct other *)opaque)->dst;
	{
		struct other *tt = opaque;
		x += tt->dst;
	}
	x += tt->dst;
	x += container_of(opaque, struct holder, link)->t.dst;
	return x;
}
