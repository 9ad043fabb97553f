/* Serialized OTLP spans and log records -> Arrow column buffers, in one pass of C.
 *
 * The optional accelerator of tenantry.otlp.spans (the numpy decoder there is the reference and
 * the fallback) and of tenantry.otlp.logs (decode_logs: the same for LogRecord messages, deferring
 * to the upb path there). decode(spans) takes a list of serialized Span messages (what upb hands
 * over for the lite request class, see tenantry/otlp/messages.py; decode_scopes takes serialized
 * ScopeSpans instead, so upb makes no Python object per span) and returns a tuple of bytes objects:
 * the offsets, data and validity buffers of each column of the spans table that comes from the
 * span itself, ready for pyarrow.Array.from_buffers. It returns None for anything it does not
 * decode exactly as the numpy decoder does (a wire type it does not expect for a known field, a
 * length running past its message, a non-canonical attribute such as an array or a kvlist,
 * invalid UTF-8, a buffer over 2 GiB), and the caller uses the numpy decoder, which defers to upb
 * in turn. So its answers never differ from upb's; tests hold it to that.
 *
 * Promises, the numpy decoder's:
 * - singular fields: the last occurrence wins; unknown fields are skipped;
 * - ids become lower-case hex, empty ids null; a missing name is "", an empty status message null;
 * - kind > 5 and status code > 2 become -1 (null names), varint enums truncate to int32 as upb does;
 * - attributes become (key, value) strings: string values as they are, bools "true"/"false",
 *   ints in decimal, doubles as Python's repr(), a KeyValue without a value a null value; keys are
 *   unique per span (the last occurrence wins).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

__attribute__((noinline)) static int buf_realloc(Buf *b, size_t extra) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int buf_grow(Buf *b, size_t extra) {
    return b->len + extra <= b->cap ? 0 : buf_realloc(b, extra);
}

/* memcpy for the short strings that dominate (keys, values, names): overlapping word copies
 * inline, instead of a call into libc per string. Reads and writes exactly [0, n). */
static inline void copy_short(char *dst, const uint8_t *src, size_t n) {
    if (n > 16 && n <= 32) {
        uint64_t a, b, c, d;
        memcpy(&a, src, 8);
        memcpy(&b, src + 8, 8);
        memcpy(&c, src + n - 16, 8);
        memcpy(&d, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + 8, &b, 8);
        memcpy(dst + n - 16, &c, 8);
        memcpy(dst + n - 8, &d, 8);
    } else if (n >= 8 && n <= 16) {
        uint64_t a, b;
        memcpy(&a, src, 8);
        memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t a, b;
        memcpy(&a, src, 4);
        memcpy(&b, src + n - 4, 4);
        memcpy(dst, &a, 4);
        memcpy(dst + n - 4, &b, 4);
    } else if (n < 4) {
        for (size_t i = 0; i < n; i++) dst[i] = (char)src[i];
    } else {
        memcpy(dst, src, n);
    }
}

static inline int buf_put(Buf *b, const void *src, size_t n) {
    if (buf_grow(b, n)) return -1;
    copy_short(b->p + b->len, (const uint8_t *)src, n);
    b->len += n;
    return 0;
}

static inline int put_i32(Buf *b, int32_t v) { return buf_put(b, &v, sizeof v); }
static inline int put_u8(Buf *b, uint8_t v) { return buf_put(b, &v, 1); }

/* ---- wire format ------------------------------------------------------------------------ */

/* Read a varint of at most max_bytes from [*p, end); 0 when it does not end in time. */
static inline int read_varint(const uint8_t **p, const uint8_t *end, int max_bytes, uint64_t *out) {
    uint64_t v = 0;
    const uint8_t *q = *p;
    for (int j = 0; j < max_bytes; j++) {
        if (q >= end) return 0;
        uint8_t b = *q++;
        v |= (uint64_t)(b & 0x7F) << (7 * j); /* j <= 9: shifts past 63 bits drop, as numpy's do */
        if (b < 0x80) {
            *p = q;
            *out = v;
            return 1;
        }
    }
    return 0;
}

typedef struct {
    uint32_t field;
    uint32_t wire;
    uint64_t value;        /* VARINT / I64 value; LEN: payload length */
    const uint8_t *start;  /* LEN: payload start */
} Field;

/* The next field of a message: 1 read, 0 at the end, -1 malformed (the numpy scan's rules). */
static inline int next_field(const uint8_t **p, const uint8_t *end, Field *f) {
    if (*p >= end) return 0;
    uint64_t tag;
    if (!read_varint(p, end, 5, &tag) || tag < 8) return -1;
    f->field = (uint32_t)(tag >> 3);
    f->wire = (uint32_t)(tag & 7);
    switch (f->wire) {
    case 0:
        return read_varint(p, end, 10, &f->value) ? 1 : -1;
    case 1:
        if (end - *p < 8) return -1;
        memcpy(&f->value, *p, 8); /* little-endian hosts (x86-64, arm64) */
        *p += 8;
        return 1;
    case 2: {
        uint64_t len;
        if (!read_varint(p, end, 5, &len) || len > (uint64_t)(end - *p)) return -1;
        f->value = len;
        f->start = *p;
        *p += len;
        return 1;
    }
    case 5:
        if (end - *p < 4) return -1;
        *p += 4;
        return 1;
    default:
        return -1;
    }
}

/* ---- UTF-8 (as strict as upb and Arrow: no surrogates, no overlongs, max U+10FFFF) ------- */

/* Whether [s, s + n) is all ASCII: word at a time, the tail as one more (overlapping) word. */
static inline int ascii_only(const uint8_t *s, size_t n) {
    uint64_t acc = 0, w;
    if (n >= 8) {
        for (size_t i = 0; i + 8 <= n; i += 8) {
            memcpy(&w, s + i, 8);
            acc |= w;
        }
        memcpy(&w, s + n - 8, 8);
        acc |= w;
    } else {
        for (size_t i = 0; i < n; i++) acc |= s[i];
    }
    return (acc & 0x8080808080808080ULL) == 0;
}

static inline int utf8_ok(const uint8_t *s, size_t n) {
    if (ascii_only(s, n)) return 1;
    size_t i = 0;
    while (i < n) {
        while (i + 8 <= n) { /* ASCII, eight bytes at a time */
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && s[i + 1] < 0xA0) return 0;  /* overlong */
            if (c == 0xED && s[i + 1] > 0x9F) return 0;  /* surrogates */
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 ||
                (s[i + 3] & 0xC0) != 0x80)
                return 0;
            if (c == 0xF0 && s[i + 1] < 0x90) return 0;  /* overlong */
            if (c == 0xF4 && s[i + 1] > 0x8F) return 0;  /* > U+10FFFF */
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* ---- columns ----------------------------------------------------------------------------- */

static const char HEX[] = "0123456789abcdef";

typedef struct {
    Buf offs, data, valid;
} StrCol;

static void strcol_free(StrCol *c) {
    free(c->offs.p);
    free(c->data.p);
    free(c->valid.p);
}

static int strcol_init(StrCol *c) {
    memset(c, 0, sizeof *c);
    return put_i32(&c->offs, 0);
}

/* Append one value; valid == 0 appends a null. */
static inline int strcol_add(StrCol *c, const uint8_t *s, size_t n, int valid) {
    if (buf_put(&c->data, s, n)) return -1;
    if (c->data.len > INT32_MAX) return 1;
    if (put_i32(&c->offs, (int32_t)c->data.len)) return -1;
    return put_u8(&c->valid, (uint8_t)valid);
}

static inline int strcol_add_hex(StrCol *c, const uint8_t *s, size_t n) {
    if (buf_grow(&c->data, 2 * n)) return -1;
    char *o = c->data.p + c->data.len;
    for (size_t i = 0; i < n; i++) {
        o[2 * i] = HEX[s[i] >> 4];
        o[2 * i + 1] = HEX[s[i] & 15];
    }
    c->data.len += 2 * n;
    if (c->data.len > INT32_MAX) return 1;
    if (put_i32(&c->offs, (int32_t)c->data.len)) return -1;
    return put_u8(&c->valid, n > 0);
}

/* ---- attributes ------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *key;
    size_t klen;
    const uint8_t *val; /* string bytes, or NULL for a text made below */
    size_t vlen;
    int kind; /* 0 null, 1 string, 2 bool, 3 int, 4 double */
    uint64_t raw;
} Attr;

/* An AnyValue holding nothing or one string / bool / int / double, filling [p, end) exactly;
 * 0 for anything else (bytes, arrays, kvlists, string indexes, stray fields). */
static int parse_value(const uint8_t *p, const uint8_t *end, Attr *a) {
    if (p == end) {
        a->kind = 0;
        return 1;
    }
    uint8_t tag = *p++;
    if (tag == 0x0A) {
        uint64_t slen;
        if (!read_varint(&p, end, 5, &slen) || slen != (uint64_t)(end - p)) return 0;
        a->kind = 1;
        a->val = p;
        a->vlen = (size_t)slen;
        return 1;
    }
    if (tag == 0x10) {
        if (end - p != 1 || *p > 1) return 0;
        a->kind = 2;
        a->raw = *p;
        return 1;
    }
    if (tag == 0x21) {
        if (end - p != 8) return 0;
        a->kind = 4;
        memcpy(&a->raw, p, 8);
        return 1;
    }
    if (tag == 0x18) {
        if (!read_varint(&p, end, 10, &a->raw) || p != end) return 0;
        a->kind = 3;
        return 1;
    }
    return 0;
}

/* A KeyValue in canonical form (key, then a value as parse_value takes); 0 for anything else
 * (the numpy decoder then takes the batch and sends that attribute to upb). */
static int parse_attr(const uint8_t *s, const uint8_t *end, Attr *a) {
    if (end - s < 4 || s[0] != 0x0A) return 0;
    const uint8_t *p = s + 1;
    uint64_t klen, vlen;
    if (!read_varint(&p, end, 5, &klen) || klen >= ((uint64_t)1 << 31) || klen >= (uint64_t)(end - p)) return 0;
    a->key = p;
    a->klen = (size_t)klen;
    p += klen;
    if (*p != 0x12) return 0;
    p++;
    if (!read_varint(&p, end, 5, &vlen) || vlen != (uint64_t)(end - p)) return 0;
    return parse_value(p, end, a);
}

#define MAX_WANTED 8

#define N_TEXT 5
#define N_NUM 4

typedef struct {
    /* spans: trace_id, span_id, parent_span_id, name, status message;
     * logs: trace_id, span_id, severity text, body, event name */
    StrCol text[N_TEXT];
    StrCol keys, vals;
    Buf attr_offs;
    /* spans: kind, start, end, status code; logs: time, observed time, severity, flags */
    Buf num[N_NUM];
    Attr *attrs;
    size_t attrs_cap;
    PyThreadState *released; /* while decoding without the GIL */
    /* keys looked up per span: the index among all kept attributes of the entry with a non-empty
     * value, else -1 */
    int n_wanted;
    const char *wanted[MAX_WANTED];
    size_t wanted_len[MAX_WANTED];
    Buf found[MAX_WANTED];
    /* decode_scopes: per ScopeSpans message, (spans, offset of its scope message or -1, length) */
    Buf groups;
    /* decode_scopes deferred for the ScopeSpans message itself, not for one of its spans */
    int scope_deferred;
} Out;

static void out_free(Out *o) {
    for (int i = 0; i < N_TEXT; i++) strcol_free(&o->text[i]);
    strcol_free(&o->keys);
    strcol_free(&o->vals);
    free(o->attr_offs.p);
    for (int i = 0; i < N_NUM; i++) free(o->num[i].p);
    free(o->attrs);
    for (int i = 0; i < MAX_WANTED; i++) free(o->found[i].p);
    free(o->groups.p);
}

static int64_t as_enum(uint64_t raw) { return (int64_t)(int32_t)(uint32_t)(raw & 0xFFFFFFFFu); }

/* The text of a parsed value appended to ``col`` (strings as they are, bools true/false, ints in
 * decimal, doubles as Python's repr(), no value a null); 0 ok, 1 over 2 GiB, -1 out of memory. */
static int emit_value(Out *o, StrCol *col, const Attr *a) {
    char text[64];
    switch (a->kind) {
    case 1:
        return strcol_add(col, a->val, a->vlen, 1);
    case 2:
        return strcol_add(col, (const uint8_t *)(a->raw ? "true" : "false"), a->raw ? 4 : 5, 1);
    case 3: {
        int len = snprintf(text, sizeof text, "%lld", (long long)(int64_t)a->raw);
        return strcol_add(col, (const uint8_t *)text, (size_t)len, 1);
    }
    case 4: {
        double d;
        int r;
        memcpy(&d, &a->raw, 8);
        /* Python's repr(), which needs the interpreter: take the GIL for it (doubles are rare) */
        PyEval_RestoreThread(o->released);
        char *s = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (s) {
            r = strcol_add(col, (const uint8_t *)s, strlen(s), 1);
            PyMem_Free(s);
        } else {
            PyErr_Clear();
            r = -1;
        }
        o->released = PyEval_SaveThread();
        return r;
    }
    default:
        return strcol_add(col, NULL, 0, 0);
    }
}

/* The attributes of one span, duplicates dropped (the last occurrence wins); 1 ok, 0 fall back,
 * -1 out of memory. */
static int emit_attrs(Out *o, size_t n_attrs, int32_t base, int32_t *count) {
    Attr *at = o->attrs;
    int32_t kept = 0;
    int32_t found[MAX_WANTED];
    for (int w = 0; w < o->n_wanted; w++) found[w] = -1;
    /* every attribute is checked, duplicates too: a malformed one quarantines its span */
    for (size_t i = 0; i < n_attrs; i++)
        if (!utf8_ok(at[i].key, at[i].klen) || (at[i].kind == 1 && !utf8_ok(at[i].val, at[i].vlen))) return 0;
    for (size_t i = 0; i < n_attrs; i++) {
        int dup = 0;
        for (size_t j = i + 1; j < n_attrs && !dup; j++)
            dup = at[j].klen == at[i].klen &&
                  (at[i].klen == 0 || (at[j].key[at[i].klen - 1] == at[i].key[at[i].klen - 1] &&
                                       memcmp(at[j].key, at[i].key, at[i].klen) == 0));
        if (dup) continue;
        int has_text = at[i].kind == 2 || at[i].kind == 3 || at[i].kind == 4 || (at[i].kind == 1 && at[i].vlen > 0);
        for (int w = 0; w < o->n_wanted; w++)
            if (has_text && o->wanted_len[w] == at[i].klen && memcmp(o->wanted[w], at[i].key, at[i].klen) == 0)
                found[w] = base + kept;
        int r = strcol_add(&o->keys, at[i].key, at[i].klen, 1);
        if (r) return r > 0 ? 0 : -1;
        r = emit_value(o, &o->vals, &at[i]);
        if (r) return r > 0 ? 0 : -1;
        kept++;
    }
    for (int w = 0; w < o->n_wanted; w++)
        if (put_i32(&o->found[w], found[w])) return -1;
    *count = kept;
    return 1;
}

/* The end of every record: its four numbers and its attributes; 1 ok, 0 fall back, -1 out of memory. */
static int finish_record(Out *o, uint64_t a, uint64_t b, uint64_t c, uint64_t d, size_t n_attrs, int32_t *attr_total) {
    if (buf_put(&o->num[0], &a, 8) || buf_put(&o->num[1], &b, 8) || buf_put(&o->num[2], &c, 8) ||
        buf_put(&o->num[3], &d, 8))
        return -1;
    int32_t kept;
    int r = emit_attrs(o, n_attrs, *attr_total, &kept);
    if (r != 1) return r;
    *attr_total += kept;
    return put_i32(&o->attr_offs, *attr_total) ? -1 : 1;
}

/* One more attribute of the current record (a KeyValue field); 1 ok, 0 fall back, -1 out of memory. */
static int add_attr(Out *o, const Field *f, size_t *n_attrs) {
    if (*n_attrs == o->attrs_cap) {
        size_t cap = o->attrs_cap ? 2 * o->attrs_cap : 64;
        if (cap > 256) return 0; /* duplicate checks are quadratic: the numpy decoder takes these */
        Attr *a = realloc(o->attrs, cap * sizeof(Attr));
        if (!a) return -1;
        o->attrs = a;
        o->attrs_cap = cap;
    }
    if (!parse_attr(f->start, f->start + f->value, &o->attrs[*n_attrs])) return 0;
    (*n_attrs)++;
    return 1;
}

/* One span; 1 ok, 0 fall back, -1 out of memory. */
static int decode_span(Out *o, const uint8_t *s, const uint8_t *end, int32_t *attr_total) {
    const uint8_t *p = s;
    Field f;
    int r;
    const uint8_t *str[6] = {0};
    size_t len[6] = {0};
    uint64_t kind = 0, start = 0, stop = 0;
    const uint8_t *status = NULL;
    size_t status_len = 0;
    size_t n_attrs = 0;
    while ((r = next_field(&p, end, &f)) == 1) {
        switch (f.field) {
        case 1: case 2: case 3: case 4: case 5:
            if (f.wire != 2) return 0;
            str[f.field] = f.start;
            len[f.field] = (size_t)f.value;
            break;
        case 6:
            if (f.wire != 0) return 0;
            kind = f.value;
            break;
        case 7: case 8:
            if (f.wire != 1) return 0;
            if (f.field == 7) start = f.value; else stop = f.value;
            break;
        case 9:
            if (f.wire != 2) return 0;
            if ((r = add_attr(o, &f, &n_attrs)) != 1) return r;
            break;
        case 15:
            if (f.wire != 2) return 0;
            status = f.start;
            status_len = (size_t)f.value;
            break;
        default:
            break; /* events, links, counts, flags, unknown fields: not in the spans table */
        }
    }
    if (r < 0) return 0;
    /* status: code (3, varint) and message (2, string), the last of each */
    uint64_t code = 0;
    const uint8_t *msg = NULL;
    size_t msg_len = 0;
    if (status) {
        const uint8_t *q = status, *qend = status + status_len;
        while ((r = next_field(&q, qend, &f)) == 1) {
            if (f.field == 3) {
                if (f.wire != 0) return 0;
                code = f.value;
            } else if (f.field == 2) {
                if (f.wire != 2) return 0;
                msg = f.start;
                msg_len = (size_t)f.value;
            }
        }
        if (r < 0) return 0;
    }
    if ((str[5] && !utf8_ok(str[5], len[5])) || (str[3] && !utf8_ok(str[3], len[3])) ||
        (msg && !utf8_ok(msg, msg_len)))
        return 0;
    if ((r = strcol_add_hex(&o->text[0], str[1], len[1])) || (r = strcol_add_hex(&o->text[1], str[2], len[2])) ||
        (r = strcol_add_hex(&o->text[2], str[4], len[4])) || (r = strcol_add(&o->text[3], str[5], len[5], 1)) ||
        (r = strcol_add(&o->text[4], msg, msg_len, msg_len > 0)))
        return r > 0 ? 0 : -1;
    int64_t k = as_enum(kind), c = as_enum(code);
    if (k > 5) k = -1;
    if (c > 2) c = -1;
    return finish_record(o, (uint64_t)k, start, stop, (uint64_t)c, n_attrs, attr_total);
}

/* One serialized ScopeSpans: its spans (field 2) as decode_span takes them, then its span count and
 * where its scope message (field 1) is, for the caller to parse. Schema URLs (3) must be UTF-8, as
 * upb requires; a second scope (upb would merge the two) or a wrong wire type falls back.
 * 1 ok, 0 fall back, -1 out of memory. */
static int decode_scope_spans(Out *o, const uint8_t *s, const uint8_t *end, int32_t *attr_total) {
    const uint8_t *p = s;
    Field f;
    int r;
    int64_t info[3] = {0, -1, 0}; /* spans, scope offset, scope length */
    o->scope_deferred = 1; /* until a span is what defers */
    while ((r = next_field(&p, end, &f)) == 1) {
        switch (f.field) {
        case 1:
            if (f.wire != 2 || info[1] >= 0) return 0;
            info[1] = (int64_t)(f.start - s);
            info[2] = (int64_t)f.value;
            break;
        case 2:
            if (f.wire != 2) return 0;
            o->scope_deferred = 0;
            if ((r = decode_span(o, f.start, f.start + f.value, attr_total)) != 1) return r;
            o->scope_deferred = 1;
            info[0]++;
            break;
        case 3:
            if (f.wire != 2 || !utf8_ok(f.start, (size_t)f.value)) return 0;
            break;
        default:
            break; /* unknown fields: skipped, as upb keeps them aside */
        }
    }
    if (r < 0) return 0;
    return buf_put(&o->groups, info, sizeof info) ? -1 : 1;
}

/* One log record (what the upb path of tenantry.otlp.logs reads from it); 1 ok, 0 fall back,
 * -1 out of memory. A body that is not one scalar, or that appears twice (upb would merge the
 * two), falls back. */
static int decode_log(Out *o, const uint8_t *s, const uint8_t *end, int32_t *attr_total) {
    const uint8_t *p = s;
    Field f;
    int r;
    const uint8_t *str[13] = {0};
    size_t len[13] = {0};
    uint64_t time = 0, observed = 0, severity = 0;
    const uint8_t *body = NULL;
    size_t body_len = 0;
    int bodies = 0;
    size_t n_attrs = 0;
    while ((r = next_field(&p, end, &f)) == 1) {
        switch (f.field) {
        case 1: case 11:
            if (f.wire != 1) return 0;
            if (f.field == 1) time = f.value; else observed = f.value;
            break;
        case 2:
            if (f.wire != 0) return 0;
            severity = f.value;
            break;
        case 3: case 9: case 10: case 12:
            if (f.wire != 2) return 0;
            str[f.field] = f.start;
            len[f.field] = (size_t)f.value;
            break;
        case 5:
            if (f.wire != 2) return 0;
            body = f.start;
            body_len = (size_t)f.value;
            bodies++;
            break;
        case 6:
            if (f.wire != 2) return 0;
            if ((r = add_attr(o, &f, &n_attrs)) != 1) return r;
            break;
        case 7:
            if (f.wire != 0) return 0;
            break;
        case 8:
            if (f.wire != 5) return 0; /* flags: not in the logs table */
            break;
        default:
            break;
        }
    }
    if (r < 0 || bodies > 1) return 0;
    Attr b = {0};
    if (body && !parse_value(body, body + body_len, &b)) return 0;
    if ((str[3] && !utf8_ok(str[3], len[3])) || (str[12] && !utf8_ok(str[12], len[12])) ||
        (b.kind == 1 && !utf8_ok(b.val, b.vlen)))
        return 0;
    if ((r = strcol_add_hex(&o->text[0], str[9], len[9])) || (r = strcol_add_hex(&o->text[1], str[10], len[10])) ||
        (r = strcol_add(&o->text[2], str[3], len[3], len[3] > 0)) || (r = emit_value(o, &o->text[3], &b)) ||
        (r = strcol_add(&o->text[4], str[12], len[12], len[12] > 0)))
        return r > 0 ? 0 : -1;
    return finish_record(o, time, observed, (uint64_t)as_enum(severity), 0 /* no flags column */, n_attrs, attr_total);
}

static PyObject *bytes_of(Buf *b) { return PyBytes_FromStringAndSize(b->p ? b->p : "", (Py_ssize_t)b->len); }

PyDoc_STRVAR(decode_doc,
"decode(spans: list[bytes], lookup: tuple[bytes, ...] = ()) -> tuple | None\n\n"
"Columns of serialized Span messages, as bytes buffers:\n"
"(trace_id, span_id, parent_span_id, name, status_message, attr_keys, attr_values) each as\n"
"(int32 offsets, data, uint8 validity per value), then attribute offsets per span (int32),\n"
"kind (int64), start and end (uint64), status code (int64), then per key in lookup the index\n"
"(int32) of the span's attribute with that key and a non-empty value, or -1.\n"
"A last bytes object is empty here (decode_scopes fills it).\n"
"None: use the numpy decoder.");

typedef int (*RecordFn)(Out *, const uint8_t *, const uint8_t *, int32_t *);

/* ``one`` over every item of a list of bytes; ``groups``: the items hold many records each. */
static PyObject *run(PyObject *args, RecordFn one, int groups) {
    PyObject *arg, *wanted = NULL;
    if (!PyArg_ParseTuple(args, "O|O!", &arg, &PyTuple_Type, &wanted)) return NULL;
    if (wanted && PyTuple_GET_SIZE(wanted) > MAX_WANTED) {
        PyErr_Format(PyExc_ValueError, "looks up at most %d keys", MAX_WANTED);
        return NULL;
    }
    if (wanted)
        for (Py_ssize_t w = 0; w < PyTuple_GET_SIZE(wanted); w++)
            if (!PyBytes_Check(PyTuple_GET_ITEM(wanted, w))) {
                PyErr_SetString(PyExc_TypeError, "the keys to look up must be bytes");
                return NULL;
            }
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "expected a list of bytes");
        return NULL;
    }
    /* a tuple of the items: the caller's list may change while the GIL is released, the tuple
     * cannot, and it keeps every bytes object alive */
    PyObject *items = PyList_AsTuple(arg);
    if (!items) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(items, i))) {
            Py_DECREF(items);
            PyErr_SetString(PyExc_TypeError, "expected a list of bytes");
            return NULL;
        }
    Out o;
    memset(&o, 0, sizeof o);
    o.n_wanted = wanted ? (int)PyTuple_GET_SIZE(wanted) : 0;
    for (int w = 0; w < o.n_wanted; w++) { /* the tuple is the caller's and outlives this call */
        o.wanted[w] = PyBytes_AS_STRING(PyTuple_GET_ITEM(wanted, w));
        o.wanted_len[w] = (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(wanted, w));
    }
    StrCol *cols[] = {&o.text[0], &o.text[1], &o.text[2], &o.text[3], &o.text[4], &o.keys, &o.vals};
    int32_t attr_total = 0;
    int r = 1;
    for (int i = 0; i < 7; i++)
        if (strcol_init(cols[i])) r = -1;
    if (r == 1 && put_i32(&o.attr_offs, 0)) r = -1;
    /* room for everything up front (ids double in hex; text never grows): no reallocations for
     * lists of records; lists of groups reserve the input's size for ids, an upper bound */
    size_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) total += (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(items, i));
    /* (at most 64 MiB each up front: a huge request grows its buffers as it goes) */
    const size_t most = (size_t)64 << 20;
    size_t ids = groups ? total : 32 * (size_t)n; /* a span's 16 id bytes take 18 or more */
    if (ids > most) ids = most;
    if (total > most) total = most;
    if (r == 1 && (buf_grow(&o.text[3].data, total) || buf_grow(&o.keys.data, total) || buf_grow(&o.vals.data, total) ||
                   buf_grow(&o.text[0].data, ids) || buf_grow(&o.text[1].data, ids / 2)))
        r = -1;
    /* the pass itself runs without the GIL: other threads (lake writes, the next batch) go on */
    o.released = PyEval_SaveThread();
    for (Py_ssize_t i = 0; i < n && r == 1; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        const uint8_t *s = (const uint8_t *)PyBytes_AS_STRING(item);
        r = one(&o, s, s + PyBytes_GET_SIZE(item), &attr_total);
    }
    PyEval_RestoreThread(o.released);
    Py_DECREF(items);
    if (r < 0) {
        out_free(&o);
        return PyErr_NoMemory();
    }
    if (r == 0) {
        out_free(&o);
        if (o.scope_deferred) Py_RETURN_FALSE; /* decode_scopes: decode() may take the spans */
        Py_RETURN_NONE;
    }
    PyObject *res = PyTuple_New(7 * 3 + 5 + o.n_wanted + 1);
    if (!res) {
        out_free(&o);
        return NULL;
    }
    int k = 0;
    for (int i = 0; i < 7; i++) {
        PyTuple_SET_ITEM(res, k++, bytes_of(&cols[i]->offs));
        PyTuple_SET_ITEM(res, k++, bytes_of(&cols[i]->data));
        PyTuple_SET_ITEM(res, k++, bytes_of(&cols[i]->valid));
    }
    PyTuple_SET_ITEM(res, k++, bytes_of(&o.attr_offs));
    for (int i = 0; i < N_NUM; i++) PyTuple_SET_ITEM(res, k++, bytes_of(&o.num[i]));
    for (int w = 0; w < o.n_wanted; w++) PyTuple_SET_ITEM(res, k++, bytes_of(&o.found[w]));
    PyTuple_SET_ITEM(res, k++, bytes_of(&o.groups));
    out_free(&o);
    for (int i = 0; i < k; i++)
        if (!PyTuple_GET_ITEM(res, i)) {
            Py_DECREF(res);
            return NULL;
        }
    return res;
}

static PyObject *decode(PyObject *self, PyObject *args) {
    (void)self;
    return run(args, decode_span, 0);
}

PyDoc_STRVAR(decode_logs_doc,
"decode_logs(records: list[bytes], lookup: tuple[bytes, ...] = ()) -> tuple | None\n\n"
"Like decode() for serialized LogRecord messages: (trace_id, span_id, severity_text, body,\n"
"event_name, attr_keys, attr_values) each as (int32 offsets, data, uint8 validity), attribute\n"
"offsets per record, time and observed time (uint64), severity number (int64), flags (always 0),\n"
"then the lookups. None: use the upb decoder.");

static PyObject *decode_logs(PyObject *self, PyObject *args) {
    (void)self;
    return run(args, decode_log, 0);
}

PyDoc_STRVAR(decode_scopes_doc,
"decode_scopes(scope_spans: list[bytes], lookup: tuple[bytes, ...] = ()) -> tuple | bool | None\n\n"
"Like decode() for serialized ScopeSpans messages (their spans, in order), so no Python object\n"
"is made per span. The last bytes object holds three int64 per ScopeSpans: its number of spans,\n"
"the offset of its scope message in it (-1: none) and that message's length.\n"
"False: a ScopeSpans message itself is not decoded here (a second scope, a schema URL that is not\n"
"UTF-8, an unexpected wire type): use decode() on its spans. None: a span is not decoded exactly\n"
"(decode() would defer too): use the numpy decoder.");

static PyObject *decode_scopes(PyObject *self, PyObject *args) {
    (void)self;
    return run(args, decode_scope_spans, 1);
}

PyDoc_STRVAR(top_counts_doc,
"top_counts(bodies: list[bytes]) -> bytes | None\n\n"
"The number of top-level field-1 entries (resource_spans, resource_logs, ...) of each serialized\n"
"request, as int64; None when a body has any other top-level field or is malformed there.");

static PyObject *top_counts(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "expected a list of bytes");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    PyObject *res = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    if (!res) return NULL;
    int64_t *counts = (int64_t *)PyBytes_AS_STRING(res);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(arg, i);
        if (!PyBytes_Check(item)) {
            Py_DECREF(res);
            PyErr_SetString(PyExc_TypeError, "expected a list of bytes");
            return NULL;
        }
        const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(item), *end = p + PyBytes_GET_SIZE(item);
        Field f;
        int r;
        counts[i] = 0;
        while ((r = next_field(&p, end, &f)) == 1) {
            if (f.field != 1 || f.wire != 2) break;
            counts[i]++;
        }
        if (r != 0) { /* another field, or malformed */
            Py_DECREF(res);
            Py_RETURN_NONE;
        }
    }
    return res;
}

static PyMethodDef methods[] = {
    {"decode_scopes", decode_scopes, METH_VARARGS, decode_scopes_doc},
    {"top_counts", top_counts, METH_O, top_counts_doc},
    {"decode", decode, METH_VARARGS, decode_doc},
    {"decode_logs", decode_logs, METH_VARARGS, decode_logs_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastspans",
    "Serialized OTLP spans and log records -> Arrow column buffers (the optional C accelerator of\n"
    "tenantry.otlp.spans and tenantry.otlp.logs).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__fastspans(void) { return PyModule_Create(&module); }
