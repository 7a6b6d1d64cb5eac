/* cgrep test header, found only with -I tests/cgrep/data/include */
#ifndef CONN_H
#define CONN_H
struct tuple {
	int src;
	int dst;
};
struct tuple_hash {
	struct tuple tuple;
};
struct conn {
	struct tuple_hash tuplehash[2];
	struct tuple *orig;
};
struct tuple *conn_tuple(struct conn *ct);
#endif
