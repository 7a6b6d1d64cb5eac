struct flow { int state; };
void a(struct flow *f) { f->state = 1; }
