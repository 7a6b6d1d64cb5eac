/* cgrep test file: uses of variables of type struct flow, and calls. */
struct flow {
	int state;
};
typedef struct flow flow_t;

struct flow gflow;
int counter;

int flow_put(struct flow *f);
int flow_get(int n, flow_t *f);
int other_put(struct flow *f);

int used(struct flow *f, flow_t *g, int n)
{
	struct flow *p = f;
	int i = n;

	flow_put(p);
	flow_get(i, g);
	other_put(&gflow);
	flow_put((struct flow *)0);
	flow_put((void *)f);
	if (p == g)
		counter++;
	return p->state + gflow.state;
}
