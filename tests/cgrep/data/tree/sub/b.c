struct flow { int state; };
void b(struct flow *f) { f->state = 2; }
