struct flow { int state; };
static inline void c(struct flow *f) { f->state = 3; }
