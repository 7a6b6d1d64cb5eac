/* cgrep test file: several arguments of the type in one call. */
struct flow {
	int state;
};

int flow_cmp(const struct flow *a, const struct flow *b);

int calls(struct flow *x, struct flow *y, int n)
{
	return flow_cmp(x, y) + flow_cmp(y, x) + n;
}
