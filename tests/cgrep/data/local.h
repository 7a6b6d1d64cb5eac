/* cgrep test header, next to reach.c (found through #include "local.h") */
struct holder {
	int link;
	struct tuple t;
	union {
		int anon_dst;
		long anon_src;
	};
};
struct other {
	int dst;
};
