/* cgrep test file: a struct defined inside a function body. */
struct flow {
	int state;
};

int inner(struct flow *f)
{
	struct holder {
		struct flow *flow;
	} h = { f };

	return h.flow->state;
}
