/* cgrep test file: each operation on member "state" of struct flow. */
struct flow {
	unsigned long state;
	int mark;
};

static struct flow table[4];

void set_bit(int nr, unsigned long *addr);
int flow_check(struct flow *f, int n);

void ops(struct flow *f, struct flow v)
{
	struct flow init = { .state = 1, .mark = 2 };
	int x;

	f->state = 1;
	f->state |= 2;
	f->state += 1;
	f->state -= 1;
	f->state &= 3;
	f->state ^= 4;
	f->state <<= 1;
	f->state >>= 1;
	f->state *= 2;
	f->state /= 2;
	f->state %= 7;
	f->state++;
	f->state--;
	++f->state;
	--f->state;
	v.state = 5;
	x = f->state;
	if (f->state == 1)
		x++;
	if (2 != f->state)
		x++;
	if (f->state & 8)
		x++;
	if (f->state < 3 || f->state <= 4 || f->state > 5 || f->state >= 6)
		x++;
	if (!f->state)
		x++;
	if (f->state && x)
		x++;
	if (x & v.state)
		x++;
	WRITE_ONCE(f->state, 9);
	set_bit(1, &f->state);
	x = flow_check(f, 1) + flow_check(&v, 2) + flow_check(table, 3);
	(f->state) = 10;
}
