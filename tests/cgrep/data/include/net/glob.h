/* cgrep test header: a typedef and globals of struct tuple */
typedef struct tuple tuple_alias_t;
typedef tuple_alias_t tuple_alias2_t;
extern struct tuple header_tuple;
extern tuple_alias2_t *header_tuple_p;
