/* A small C file for the cgrep step of `make demo`. */
struct nf_conn {
	unsigned long status;
	unsigned int mark;
};

typedef struct nf_conn conn_t;

static void confirm(struct nf_conn *ct)
{
	ct->status |= 8;
	if (ct->mark == 7)
		ct->mark = 0;
}

static int assured(conn_t *c)
{
	return c->status & 4;
}
