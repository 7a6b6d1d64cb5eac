/* cgrep test file: does not parse cleanly, still searched where sound. */
struct flow {
	unsigned long state;
};

static int broken(struct flow *f)
{
	f->state = 1;
	some_macro(struct flow, state) {
	}
	int = = 3;
	return f->state == 2;
}
