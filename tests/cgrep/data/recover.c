/* cgrep test file: an #ifdef that opens a brace in each branch breaks the
 * parse of the whole function; declarations are recovered from that stretch. */
struct flow {
	unsigned long state;
};

static void recovered(struct flow *f, unsigned int n)
{
	unsigned int size = 0;

#ifdef CONFIG_EXTRA
	if (n > 1) {
#else
	if (n > 2) {
#endif
		size = 1;
	}
	if (n)
		size += f->state;
}

static int after(struct flow *g)
{
	return g->state;
}
