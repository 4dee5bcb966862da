/* edge._clickfast.Encoder: edge.clickencoder.ClickEncoder.add in C, byte for byte.
 *
 * The recorder's per-click work (edge/clickencoder.py says what it is and why it is here): one
 * pass over the request headers, two dict lookups, one event built at its exact size, one counter
 * incremented. Everything that is not per click calls back into Python: a new set of request
 * headers (request_tail), a new link (link_part), a new day (utc_day), X-Forwarded-For
 * (client_ip), prefetch headers (prefetch_header), an address that needs JSON escaping (dumps).
 * A scope it does not expect (headers that are not a list or tuple of pairs of bytes) goes to the
 * Python add (fallback) whole. tests/test_clickencoder.py compares the two on the same clicks.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define MASK_26 ((1ULL << 26) - 1)
#define MASK_48 ((1ULL << 48) - 1)
#define PREFIX_LEN 24  /* "%08x-%04x-%04x-%04x-" */
#define MAX_PREFETCH_NAMES 8
#define MAX_NAME 32

/* What one (link, Location) pair needs per click, found by the identity of the two objects: the
 * slot holds references to both, so neither address can be reused by another object while it
 * is there. A LinkRecord is immutable and the Location is the prebuilt str of its answer. */
typedef struct {
    PyObject *link, *location;
    PyObject *part;     /* the event's link part (bytes) */
    PyObject *day;      /* the day `field` was built for (identity of Encoder.day) */
    PyObject *field[2]; /* counter fields "<link id>:<day>:h" and ":b" of that day, built lazily */
} Slot;

#ifndef SLOTS
#define SLOTS 4096 /* a power of two */
#endif

typedef struct {
    PyObject_HEAD
    PyObject *fallback, *request_tail, *client_ip, *prefetch_header, *link_part, *utc_day, *dumps;
    PyObject *counter_field;
    Slot *slots;
    PyObject *tails, *links; /* dicts */
    Py_ssize_t tails_max, links_max;
    /* The header-set cache's byte bound (edge.clickencoder.tail_cost): what it holds, its cap, the
     * longest value of each of the request's first five parts it keeps, a kept set's overhead. */
    Py_ssize_t tails_bytes, tails_bytes_max, tail_cuts[5], tail_overhead;
    char head[32];           /* '{"v":<version>,"id":"' */
    Py_ssize_t head_len;
    int n_prefetch;
    Py_ssize_t prefetch_len[MAX_PREFETCH_NAMES];
    char prefetch[MAX_PREFETCH_NAMES][MAX_NAME];
    long long second;        /* the UTC second of `day` */
    PyObject *day;           /* str */
    long long ms;            /* the millisecond of `prefix` and `ts_text` */
    char prefix[PREFIX_LEN];
    char ts_text[21];        /* `ms` in decimal, the event's "ts" */
    int ts_len;
    uint64_t high, low, counter;
    /* The open batch of record(): its counts, its entry (events one per line, entry_len bytes of
     * a bytes object grown as needed), how many clicks it holds and how many make it full. */
    PyObject *counts;
    PyObject *entry;
    Py_ssize_t entry_len, entry_hint, pending, limit;
} Encoder;

static PyObject *s_headers, *s_query_string, *s_method, *s_client, *s_id, *s_account_id, *s_code;
static PyObject *s_GET, *empty_bytes, *empty_str, *one;

static const char HEX[] = "0123456789abcdef";

static void put_hex(char *out, uint64_t value, int digits) {
    for (int i = digits - 1; i >= 0; i--) {
        out[i] = HEX[value & 0xF];
        value >>= 4;
    }
}

static int put_decimal(char *out, long long value) { /* out holds 21 bytes; returns length */
    char digits[21];
    int n = 0, negative = value < 0;
    unsigned long long v = negative ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    int len = 0;
    if (negative) out[len++] = '-';
    while (n) out[len++] = digits[--n];
    return len;
}

static long long floor_div(long long a, long long b) {
    long long q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int name_is(PyObject *name, const char *text, Py_ssize_t len) {
    return PyBytes_GET_SIZE(name) == len && memcmp(PyBytes_AS_STRING(name), text, len) == 0;
}

static int is_prefetch_name(Encoder *self, PyObject *name) {
    for (int i = 0; i < self->n_prefetch; i++) {
        if (name_is(name, self->prefetch[i], self->prefetch_len[i])) return 1;
    }
    return 0;
}

/* Whether `ip` is a JSON string as it is, between quotes (addresses always are). */
static int ip_plain(PyObject *ip) {
    if (!PyUnicode_IS_ASCII(ip)) return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(ip);
    const unsigned char *data = PyUnicode_1BYTE_DATA(ip);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (data[i] < 0x20 || data[i] >= 0x7F || data[i] == '"' || data[i] == '\\') return 0;
    }
    return 1;
}

/* The JSON string of an `ip` that is not plain (dumps'). New reference. */
static PyObject *ip_json(Encoder *self, PyObject *ip) {
    PyObject *out = PyObject_CallOneArg(self->dumps, ip);
    if (out != NULL && !PyBytes_Check(out)) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_TypeError, "dumps did not return bytes");
        return NULL;
    }
    return out;
}

static int set_prefix(Encoder *self, long long ts_ms) {
    uint64_t t = (uint64_t)ts_ms;
    char *p = self->prefix;
    put_hex(p, (t >> 16) & 0xFFFFFFFFULL, 8);
    p[8] = '-';
    put_hex(p + 9, t & 0xFFFF, 4);
    p[13] = '-';
    put_hex(p + 14, 0x7000 | (self->high >> 14), 4);
    p[18] = '-';
    put_hex(p + 19, 0x8000 | (self->high & 0x3FFF), 4);
    p[23] = '-';
    self->ts_len = put_decimal(self->ts_text, ts_ms);
    self->ms = ts_ms;
    return 0;
}

/* The event's link part for (link id, code, location), from the cache or link_part(). New ref. */
static PyObject *part_of(Encoder *self, PyObject *link, PyObject *link_id, PyObject *code,
                         PyObject *location) {
    PyObject *key = PyTuple_Pack(3, link_id, code, location);
    if (key == NULL) return NULL;
    PyObject *part = PyDict_GetItemWithError(self->links, key);
    if (part != NULL) {
        Py_DECREF(key);
        Py_INCREF(part);
        return part;
    }
    if (PyErr_Occurred()) goto fail;
    PyObject *account_id = PyObject_GetAttr(link, s_account_id);
    if (account_id == NULL) goto fail;
    PyObject *args[4] = {link_id, account_id, code, location};
    part = PyObject_Vectorcall(self->link_part, args, 4, NULL);
    Py_DECREF(account_id);
    if (part == NULL) goto fail;
    if (!PyBytes_Check(part)) {
        PyErr_SetString(PyExc_TypeError, "link_part did not return bytes");
        goto fail_part;
    }
    if (PyDict_GET_SIZE(self->links) >= self->links_max) PyDict_Clear(self->links);
    if (PyDict_SetItem(self->links, key, part) < 0) goto fail_part;
    Py_DECREF(key);
    return part;
fail_part:
    Py_DECREF(part);
fail:
    Py_DECREF(key);
    return NULL;
}

/* The bytes the header set `request` and its `tail` hold when cached (edge.clickencoder.tail_cost);
 * -1 when a value is longer than its cut, so that it is not cached. */
static Py_ssize_t tail_cost(Encoder *self, PyObject *request, PyObject *tail) {
    Py_ssize_t cost = self->tail_overhead + PyBytes_GET_SIZE(tail);
    for (int i = 0; i < 5; i++) {
        PyObject *value = PyTuple_GET_ITEM(request, i);
        if (value == Py_None) continue;
        if (!PyBytes_Check(value) || PyBytes_GET_SIZE(value) > self->tail_cuts[i]) return -1;
        cost += PyBytes_GET_SIZE(value);
    }
    return cost;
}

/* (is_bot, tail) for the request, from the cache or request_tail(). A new reference to tail. */
static int tail_of(Encoder *self, PyObject *request, int *is_bot, PyObject **tail) {
    PyObject *known = PyDict_GetItemWithError(self->tails, request);
    if (known != NULL) {
        Py_INCREF(known);
    } else {
        if (PyErr_Occurred()) return -1;
        known = PyObject_Call(self->request_tail, request, NULL);
        if (known == NULL) return -1;
        if (!PyTuple_CheckExact(known) || PyTuple_GET_SIZE(known) != 2 ||
            !PyBytes_Check(PyTuple_GET_ITEM(known, 1))) {
            Py_DECREF(known);
            PyErr_SetString(PyExc_TypeError, "request_tail did not return (bool, bytes)");
            return -1;
        }
        Py_ssize_t cost = tail_cost(self, request, PyTuple_GET_ITEM(known, 1));
        if (cost >= 0) {
            if (PyDict_GET_SIZE(self->tails) >= self->tails_max ||
                self->tails_bytes + cost > self->tails_bytes_max) {
                PyDict_Clear(self->tails);
                self->tails_bytes = 0;
            }
            if (PyDict_SetItem(self->tails, request, known) < 0) {
                Py_DECREF(known);
                return -1;
            }
            self->tails_bytes += cost;
        }
    }
    int bot = PyObject_IsTrue(PyTuple_GET_ITEM(known, 0));
    if (bot < 0) {
        Py_DECREF(known);
        return -1;
    }
    *is_bot = bot;
    *tail = Py_NewRef(PyTuple_GET_ITEM(known, 1));
    Py_DECREF(known);
    return 0;
}

static void slot_clear(Slot *slot) {
    Py_CLEAR(slot->link);
    Py_CLEAR(slot->location);
    Py_CLEAR(slot->part);
    Py_CLEAR(slot->day);
    Py_CLEAR(slot->field[0]);
    Py_CLEAR(slot->field[1]);
}

/* The slot of (link, location), filled on a miss. Borrowed; NULL with an exception set. */
static Slot *slot_of(Encoder *self, PyObject *link, PyObject *location) {
    uint64_t h = ((uint64_t)(uintptr_t)link >> 4) * 0x9E3779B97F4A7C15ULL;
    h ^= ((uint64_t)(uintptr_t)location >> 4) * 0xC2B2AE3D27D4EB4FULL;
    Slot *slot = &self->slots[(h >> 32) & (SLOTS - 1)];
    if (slot->link == link && slot->location == location) return slot;
    PyObject *link_id = PyObject_GetAttr(link, s_id);
    if (link_id == NULL) return NULL;
    PyObject *code = PyObject_GetAttr(link, s_code);
    if (code == NULL) {
        Py_DECREF(link_id);
        return NULL;
    }
    PyObject *part = part_of(self, link, link_id, code, location);
    Py_DECREF(link_id);
    Py_DECREF(code);
    if (part == NULL) return NULL;
    slot_clear(slot);
    slot->link = Py_NewRef(link);
    slot->location = Py_NewRef(location);
    slot->part = part;
    return slot;
}

/* The counter field of the slot's link for `day` and `bot`. Borrowed; NULL with an exception. */
static PyObject *field_of(Encoder *self, Slot *slot, PyObject *link, PyObject *day, int bot) {
    if (slot->day != day) {
        Py_CLEAR(slot->field[0]);
        Py_CLEAR(slot->field[1]);
        Py_XSETREF(slot->day, Py_NewRef(day));
    }
    if (slot->field[bot] == NULL) {
        PyObject *link_id = PyObject_GetAttr(link, s_id);
        if (link_id == NULL) return NULL;
        PyObject *args[3] = {link_id, day, bot ? Py_True : Py_False};
        PyObject *field = PyObject_Vectorcall(self->counter_field, args, 3, NULL);
        Py_DECREF(link_id);
        if (field == NULL) return NULL;
        if (!PyUnicode_CheckExact(field)) {
            Py_DECREF(field);
            PyErr_SetString(PyExc_TypeError, "counter_field did not return str");
            return NULL;
        }
        slot->field[bot] = field;
    }
    return slot->field[bot];
}

static PyObject *call_fallback(Encoder *self, PyObject *const *args, Py_ssize_t nargs) {
    return PyObject_Vectorcall(self->fallback, args, nargs, NULL);
}

/* Room for `n` more bytes at the end of the open batch's entry; NULL with an exception set, the
 * entry as it was. A bigger entry is a new object the old bytes are copied into, not a
 * _PyBytes_Resize, which frees the object when it fails. */
static char *entry_reserve(Encoder *self, Py_ssize_t n) {
    if (n > PY_SSIZE_T_MAX - self->entry_len) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t need = self->entry_len + n;
    if (self->entry == NULL) {
        Py_ssize_t cap = need > self->entry_hint ? need : self->entry_hint;
        if ((self->entry = PyBytes_FromStringAndSize(NULL, cap)) == NULL) return NULL;
    } else if (need > PyBytes_GET_SIZE(self->entry)) {
        Py_ssize_t size = PyBytes_GET_SIZE(self->entry);
        Py_ssize_t cap = size <= PY_SSIZE_T_MAX / 2 && 2 * size > need ? 2 * size : need;
        PyObject *grown = PyBytes_FromStringAndSize(NULL, cap);
        if (grown == NULL) return NULL;
        memcpy(PyBytes_AS_STRING(grown), PyBytes_AS_STRING(self->entry), self->entry_len);
        Py_SETREF(self->entry, grown);
    }
    return PyBytes_AS_STRING(self->entry) + self->entry_len;
}

/* Encode one click: into `events` (a list) as a new bytes object, or, with events NULL, as a line
 * of the open batch's entry. Counts it into `counts`. 0 done, -1 an exception, 1 a scope of an
 * unexpected shape (nothing done: the caller hands it to the Python add). */
static int encode_click(Encoder *self, long long ts_ms, PyObject *link, PyObject *scope,
                        PyObject *location, PyObject *counts, PyObject *events) {
    if (!PyDict_CheckExact(scope) || !PyUnicode_CheckExact(location)) return 1;
    PyObject *headers = PyDict_GetItemWithError(scope, s_headers);
    if (headers == NULL && PyErr_Occurred()) return -1;
    Py_ssize_t n_headers = 0;
    PyObject **items = NULL;
    if (headers != NULL && headers != Py_None) {
        if (PyList_CheckExact(headers)) {
            n_headers = PyList_GET_SIZE(headers);
            items = ((PyListObject *)headers)->ob_item;
        } else if (PyTuple_CheckExact(headers)) {
            n_headers = PyTuple_GET_SIZE(headers);
            items = ((PyTupleObject *)headers)->ob_item;
        } else {
            return 1;
        }
    }
    /* The pairs must be bytes; checked before anything calls back into Python. */
    for (Py_ssize_t i = 0; i < n_headers; i++) {
        PyObject *pair = items[i];
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0)) ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
            return 1;
        }
    }
    Py_XINCREF(headers); /* callbacks below run Python: keep the pairs alive */

    PyObject *agent = empty_bytes, *referer = empty_bytes, *language = empty_bytes;
    PyObject *host = empty_bytes, *forwarded = NULL, *request = NULL;
    PyObject *peer = NULL, *ip = NULL, *ipj = NULL, *part = NULL, *event = NULL, *key = NULL;
    int prefetch = 0, result = -1;
    for (Py_ssize_t i = 0; i < n_headers; i++) {
        PyObject *name = PyTuple_GET_ITEM(items[i], 0), *value = PyTuple_GET_ITEM(items[i], 1);
        switch (PyBytes_GET_SIZE(name)) {
        case 4:
            if (name_is(name, "host", 4)) { host = value; continue; }
            break;
        case 7:
            if (name_is(name, "referer", 7)) { referer = value; continue; }
            break;
        case 10:
            if (name_is(name, "user-agent", 10)) { agent = value; continue; }
            break;
        case 15:
            if (name_is(name, "accept-language", 15)) { language = value; continue; }
            if (name_is(name, "x-forwarded-for", 15)) {
                if (forwarded == NULL && (forwarded = PyList_New(0)) == NULL) goto done;
                PyObject *hop = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(value),
                                                       PyBytes_GET_SIZE(value), NULL);
                if (hop == NULL) goto done;
                int failed = PyList_Append(forwarded, hop);
                Py_DECREF(hop);
                if (failed < 0) goto done;
                continue;
            }
            break;
        }
        if (!prefetch && is_prefetch_name(self, name)) {
            PyObject *pair[2] = {name, value};
            PyObject *answer = PyObject_Vectorcall(self->prefetch_header, pair, 2, NULL);
            if (answer == NULL) goto done;
            prefetch = PyObject_IsTrue(answer);
            Py_DECREF(answer);
            if (prefetch < 0) goto done;
        }
    }

    PyObject *query = PyDict_GetItemWithError(scope, s_query_string);
    if (query == NULL) {
        if (PyErr_Occurred()) goto done;
        query = Py_None;
    }
    PyObject *method = PyDict_GetItemWithError(scope, s_method);
    if (method == NULL) {
        if (PyErr_Occurred()) goto done;
        method = s_GET;
    }
    request = PyTuple_Pack(7, agent, referer, language, host, query, method,
                           prefetch ? Py_True : Py_False);
    if (request == NULL) goto done;
    int is_bot;
    PyObject *tail;
    if (tail_of(self, request, &is_bot, &tail) < 0) goto done; /* ours: callbacks may clear the cache */

    PyObject *client = PyDict_GetItemWithError(scope, s_client);
    if (client == NULL && PyErr_Occurred()) goto done_tail;
    int has_client = client == NULL ? 0 : PyObject_IsTrue(client);
    if (has_client < 0) goto done_tail;
    if (has_client) {
        PyObject *first = PySequence_GetItem(client, 0);
        if (first == NULL) goto done_tail;
        peer = PyObject_Str(first);
        Py_DECREF(first);
        if (peer == NULL) goto done_tail;
    } else {
        peer = Py_NewRef(empty_str);
    }

    long long second = floor_div(ts_ms, 1000);
    if (second != self->second || self->day == NULL) {
        PyObject *ms = PyLong_FromLongLong(ts_ms);
        if (ms == NULL) goto done_tail;
        PyObject *day = PyObject_CallOneArg(self->utc_day, ms);
        Py_DECREF(ms);
        if (day == NULL) goto done_tail;
        int same = self->day != NULL && PyUnicode_Check(day) && PyUnicode_Compare(day, self->day) == 0;
        if (same) { /* keep the object: slots know the day by identity */
            Py_DECREF(day);
        } else {
            if (PyErr_Occurred()) {
                Py_DECREF(day);
                goto done_tail;
            }
            Py_XSETREF(self->day, day);
        }
        self->second = second;
    }
    PyObject *day = Py_NewRef(self->day);

    if (forwarded != NULL) {
        PyObject *pair[2] = {peer, forwarded};
        ip = PyObject_Vectorcall(self->client_ip, pair, 2, NULL);
    } else {
        ip = Py_NewRef(peer);
    }
    if (ip == NULL) goto done_day;
    if (!PyUnicode_Check(ip)) {
        PyErr_SetString(PyExc_TypeError, "client_ip did not return str");
        goto done_day;
    }
    /* The address between quotes, or (never seen from a server) dumps' JSON string of it. */
    int ip_quote = ip_plain(ip);
    if (!ip_quote && (ipj = ip_json(self, ip)) == NULL) goto done_day;
    const char *ip_text = ip_quote ? (const char *)PyUnicode_1BYTE_DATA(ip) : PyBytes_AS_STRING(ipj);
    Py_ssize_t ip_len = ip_quote ? PyUnicode_GET_LENGTH(ip) + 2 : PyBytes_GET_SIZE(ipj);

    Slot *slot = slot_of(self, link, location);
    if (slot == NULL) goto done_day;
    part = Py_NewRef(slot->part);
    PyObject *field = field_of(self, slot, link, day, is_bot);
    if (field == NULL) goto done_day;
    key = Py_NewRef(field);

    if (ts_ms != self->ms) set_prefix(self, ts_ms);
    uint64_t low = (self->low + ++self->counter) & MASK_48;
    const char *ts_text = self->ts_text;
    int ts_len = self->ts_len;
    Py_ssize_t part_len = PyBytes_GET_SIZE(part);
    Py_ssize_t tail_len = PyBytes_GET_SIZE(tail);
    /* head + prefix + 12 hex + '","ts":' + ts + ',' + part + '"ip":' + ip + ',' + tail */
    Py_ssize_t size = self->head_len + PREFIX_LEN + 12 + 7 + ts_len + 1 + part_len + 5 + ip_len + 1 +
                      tail_len;
    char *p;
    if (events != NULL) {
        if ((event = PyBytes_FromStringAndSize(NULL, size)) == NULL) goto done_day;
        p = PyBytes_AS_STRING(event);
    } else if ((p = entry_reserve(self, size + 1)) == NULL) {
        goto done_day;
    }
    memcpy(p, self->head, self->head_len);
    p += self->head_len;
    memcpy(p, self->prefix, PREFIX_LEN);
    p += PREFIX_LEN;
    put_hex(p, low, 12);
    p += 12;
    memcpy(p, "\",\"ts\":", 7);
    p += 7;
    memcpy(p, ts_text, ts_len);
    p += ts_len;
    *p++ = ',';
    memcpy(p, PyBytes_AS_STRING(part), part_len);
    p += part_len;
    memcpy(p, "\"ip\":", 5);
    p += 5;
    if (ip_quote) {
        *p++ = '"';
        memcpy(p, ip_text, ip_len - 2);
        p += ip_len - 2;
        *p++ = '"';
    } else {
        memcpy(p, ip_text, ip_len);
        p += ip_len;
    }
    *p++ = ',';
    memcpy(p, PyBytes_AS_STRING(tail), tail_len);
    if (events == NULL) p[tail_len] = '\n'; /* written, not yet part of the entry: see below */

    PyObject *count = PyDict_GetItemWithError(counts, key);
    if (count == NULL && PyErr_Occurred()) goto done_day;
    PyObject *next = count == NULL ? PyLong_FromLong(1) : PyNumber_Add(count, one);
    if (next == NULL) goto done_day;
    if (events != NULL && PyList_Append(events, event) < 0) {
        Py_DECREF(next);
        goto done_day;
    }
    int failed = PyDict_SetItem(counts, key, next);
    Py_DECREF(next);
    if (failed < 0) { /* keep events and counts in step */
        if (events != NULL) {
            PyList_SetSlice(events, PyList_GET_SIZE(events) - 1, PyList_GET_SIZE(events), NULL);
        }
        goto done_day;
    }
    if (events == NULL) { /* the line joins the entry only now that it is counted */
        self->entry_len += size + 1;
        self->pending++;
    }
    result = 0;
done_day:
    Py_DECREF(day);
done_tail:
    Py_DECREF(tail);
done:
    Py_XDECREF(key);
    Py_XDECREF(event);
    Py_XDECREF(part);
    Py_XDECREF(ipj);
    Py_XDECREF(ip);
    Py_XDECREF(peer);
    Py_XDECREF(request);
    Py_XDECREF(forwarded);
    Py_XDECREF(headers);
    return result;
}

/* add(ts, link, scope, location, counts, events) */
static PyObject *Encoder_add(Encoder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "add() takes 6 arguments");
        return NULL;
    }
    if (!PyDict_CheckExact(args[4]) || !PyList_CheckExact(args[5])) {
        return call_fallback(self, args, nargs);
    }
    double ts = PyFloat_AsDouble(args[0]);
    if (ts == -1.0 && PyErr_Occurred()) return NULL;
    int done = encode_click(self, (long long)(ts * 1000), args[1], args[2], args[3], args[4], args[5]);
    if (done == 1) return call_fallback(self, args, nargs);
    return done < 0 ? NULL : Py_NewRef(Py_None);
}

/* One click now into the open batch (record()'s work): 0, or -1 with an exception set. */
static int record_click(Encoder *self, PyObject *link, PyObject *scope, PyObject *location) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now); /* time.time()'s clock */
    long long ts_ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    int done = encode_click(self, ts_ms, link, scope, location, self->counts, NULL);
    if (done != 1) return done;
    /* A scope C does not expect: the Python add, into a list, then onto the entry. */
    PyObject *events = PyList_New(0);
    if (events == NULL) return -1;
    PyObject *ts = PyFloat_FromDouble(((double)ts_ms + 0.5) / 1000);
    if (ts == NULL) {
        Py_DECREF(events);
        return -1;
    }
    PyObject *call[6] = {ts, link, scope, location, self->counts, events};
    PyObject *answer = call_fallback(self, call, 6);
    Py_DECREF(ts);
    done = answer == NULL ? -1 : 0;
    Py_XDECREF(answer);
    /* What the Python add counted joins the entry, even if it raised after counting. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(events); i++) {
        PyObject *event = PyList_GET_ITEM(events, i);
        Py_ssize_t n = PyBytes_Check(event) ? PyBytes_GET_SIZE(event) : 0;
        char *p = n ? entry_reserve(self, n + 1) : NULL;
        if (p == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "add did not append bytes");
            Py_DECREF(events);
            return -1;
        }
        memcpy(p, PyBytes_AS_STRING(event), n);
        p[n] = '\n';
        self->entry_len += n + 1;
        self->pending++;
    }
    Py_DECREF(events);
    return done;
}

/* record(link, scope, location) -> whether the open batch is full */
static PyObject *Encoder_record(Encoder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "record() takes 3 arguments");
        return NULL;
    }
    if (record_click(self, args[0], args[1], args[2]) < 0) return NULL;
    return PyBool_FromLong(self->pending >= self->limit);
}

/* take() -> None, or (clicks, counters, entry) of the open batch, which starts again empty */
static PyObject *Encoder_take(Encoder *self, PyObject *Py_UNUSED(ignored)) {
    if (self->pending == 0) Py_RETURN_NONE;
    /* counters: "<field> <clicks>" lines (linkedge.events.join_counters), ASCII fields */
    Py_ssize_t size = 0, pos = 0;
    PyObject *field, *count;
    while (PyDict_Next(self->counts, &pos, &field, &count)) {
        if (!PyUnicode_IS_ASCII(field) || !PyLong_CheckExact(count)) {
            PyErr_SetString(PyExc_TypeError, "counter fields must be ASCII str, counts int");
            return NULL;
        }
        size += PyUnicode_GET_LENGTH(field) + 1 + 21 + 1;
    }
    PyObject *counters = PyBytes_FromStringAndSize(NULL, size);
    if (counters == NULL) return NULL;
    char *p = PyBytes_AS_STRING(counters);
    pos = 0;
    while (PyDict_Next(self->counts, &pos, &field, &count)) {
        if (p != PyBytes_AS_STRING(counters)) *p++ = '\n';
        memcpy(p, PyUnicode_1BYTE_DATA(field), PyUnicode_GET_LENGTH(field));
        p += PyUnicode_GET_LENGTH(field);
        *p++ = ' ';
        long long n = PyLong_AsLongLong(count);
        if (n == -1 && PyErr_Occurred()) {
            Py_DECREF(counters);
            return NULL;
        }
        p += put_decimal(p, n);
    }
    if (_PyBytes_Resize(&counters, p - PyBytes_AS_STRING(counters)) < 0) return NULL;
    /* Everything the answer needs is made before the batch is let go, so a failed allocation
     * leaves the open batch as it was (the next take() returns it). The entry is copied without
     * its last newline rather than shrunk in place: a failed _PyBytes_Resize frees its object. */
    PyObject *fresh = PyDict_New();
    if (fresh == NULL) {
        Py_DECREF(counters);
        return NULL;
    }
    Py_ssize_t clicks = self->pending, length = self->entry_len - 1;
    PyObject *entry = PyBytes_FromStringAndSize(PyBytes_AS_STRING(self->entry), length);
    if (entry == NULL) {
        Py_DECREF(counters);
        Py_DECREF(fresh);
        return NULL;
    }
    PyObject *number = PyLong_FromSsize_t(clicks);
    PyObject *answer = number == NULL ? NULL : PyTuple_Pack(3, number, counters, entry);
    Py_XDECREF(number);
    Py_DECREF(counters);
    Py_DECREF(entry);
    if (answer == NULL) {
        Py_DECREF(fresh);
        return NULL;
    }
    /* the next batch starts at this one's size */
    Py_CLEAR(self->entry);
    self->entry_hint = length + length / 4;
    self->entry_len = 0;
    self->pending = 0;
    Py_SETREF(self->counts, fresh);
    return answer;
}

static PyObject *Encoder_seed(Encoder *self, PyObject *args) {
    unsigned long long high, low;
    if (!PyArg_ParseTuple(args, "KK:seed", &high, &low)) return NULL;
    self->high = high & MASK_26;
    self->low = low & MASK_48;
    self->counter = 0;
    self->ms = -1;
    Py_RETURN_NONE;
}

static int Encoder_init(Encoder *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"fallback", "request_tail", "client_ip", "prefetch_header",
                             "prefetch_names", "link_part", "utc_day", "counter_field", "dumps",
                             "version", "tails_kept", "tails_bytes", "tail_cuts", "tail_overhead",
                             "links_kept", NULL};
    PyObject *fallback, *request_tail, *client_ip, *prefetch_header, *names, *link_part, *utc_day;
    PyObject *counter_field, *dumps;
    int version;
    Py_ssize_t tails_max, tails_bytes_max, tail_cuts[5], tail_overhead, links_max;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$OOOOO!OOOOinn(nnnnn)nn:Encoder", kwlist,
                                     &fallback, &request_tail, &client_ip, &prefetch_header,
                                     &PyTuple_Type, &names, &link_part, &utc_day, &counter_field,
                                     &dumps, &version, &tails_max, &tails_bytes_max, &tail_cuts[0],
                                     &tail_cuts[1], &tail_cuts[2], &tail_cuts[3], &tail_cuts[4],
                                     &tail_overhead, &links_max)) {
        return -1;
    }
    if (PyTuple_GET_SIZE(names) > MAX_PREFETCH_NAMES) {
        PyErr_SetString(PyExc_ValueError, "too many prefetch header names");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyBytes_Check(name) || PyBytes_GET_SIZE(name) >= MAX_NAME) {
            PyErr_SetString(PyExc_ValueError, "prefetch header names must be short bytes");
            return -1;
        }
        self->prefetch_len[i] = PyBytes_GET_SIZE(name);
        memcpy(self->prefetch[i], PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name));
    }
    self->n_prefetch = (int)PyTuple_GET_SIZE(names);
    if (tails_max < 1 || links_max < 1 || tails_bytes_max < 1 || tail_overhead < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "tails_kept, tails_bytes and links_kept must be positive, tail_overhead not negative");
        return -1;
    }
    for (int i = 0; i < 5; i++) {
        if (tail_cuts[i] < 0) {
            PyErr_SetString(PyExc_ValueError, "tail_cuts must not be negative");
            return -1;
        }
    }
    self->head_len = snprintf(self->head, sizeof self->head, "{\"v\":%d,\"id\":\"", version);
    Py_XSETREF(self->fallback, Py_NewRef(fallback));
    Py_XSETREF(self->request_tail, Py_NewRef(request_tail));
    Py_XSETREF(self->client_ip, Py_NewRef(client_ip));
    Py_XSETREF(self->prefetch_header, Py_NewRef(prefetch_header));
    Py_XSETREF(self->link_part, Py_NewRef(link_part));
    Py_XSETREF(self->utc_day, Py_NewRef(utc_day));
    Py_XSETREF(self->dumps, Py_NewRef(dumps));
    Py_XSETREF(self->counter_field, Py_NewRef(counter_field));
    if (self->slots == NULL) {
        self->slots = PyMem_Calloc(SLOTS, sizeof(Slot));
        if (self->slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    } else {
        for (int i = 0; i < SLOTS; i++) slot_clear(&self->slots[i]);
    }
    Py_XSETREF(self->tails, PyDict_New());
    Py_XSETREF(self->links, PyDict_New());
    if (self->tails == NULL || self->links == NULL) return -1;
    self->tails_max = tails_max;
    self->tails_bytes = 0;
    self->tails_bytes_max = tails_bytes_max;
    memcpy(self->tail_cuts, tail_cuts, sizeof tail_cuts);
    self->tail_overhead = tail_overhead;
    self->links_max = links_max;
    self->second = self->ms = -1;
    Py_CLEAR(self->day);
    self->high = self->low = self->counter = 0;
    Py_XSETREF(self->counts, PyDict_New());
    if (self->counts == NULL) return -1;
    Py_CLEAR(self->entry);
    self->entry_len = self->pending = 0;
    self->entry_hint = 4096;
    self->limit = PY_SSIZE_T_MAX;
    return 0;
}

static int Encoder_traverse(Encoder *self, visitproc visit, void *arg) {
    Py_VISIT(self->fallback);
    Py_VISIT(self->request_tail);
    Py_VISIT(self->client_ip);
    Py_VISIT(self->prefetch_header);
    Py_VISIT(self->link_part);
    Py_VISIT(self->utc_day);
    Py_VISIT(self->dumps);
    Py_VISIT(self->counter_field);
    Py_VISIT(self->tails);
    Py_VISIT(self->links);
    Py_VISIT(self->day);
    Py_VISIT(self->counts);
    if (self->slots != NULL) {
        for (int i = 0; i < SLOTS; i++) {
            Slot *slot = &self->slots[i];
            Py_VISIT(slot->link);
            Py_VISIT(slot->location);
            Py_VISIT(slot->part);
            Py_VISIT(slot->day);
            Py_VISIT(slot->field[0]);
            Py_VISIT(slot->field[1]);
        }
    }
    return 0;
}

static int Encoder_clear(Encoder *self) {
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->request_tail);
    Py_CLEAR(self->client_ip);
    Py_CLEAR(self->prefetch_header);
    Py_CLEAR(self->link_part);
    Py_CLEAR(self->utc_day);
    Py_CLEAR(self->dumps);
    Py_CLEAR(self->counter_field);
    Py_CLEAR(self->tails);
    Py_CLEAR(self->links);
    Py_CLEAR(self->day);
    Py_CLEAR(self->counts);
    Py_CLEAR(self->entry);
    if (self->slots != NULL) {
        for (int i = 0; i < SLOTS; i++) slot_clear(&self->slots[i]);
    }
    return 0;
}

static void Encoder_dealloc(Encoder *self) {
    PyObject_GC_UnTrack(self);
    Encoder_clear(self);
    PyMem_Free(self->slots);
    self->slots = NULL;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Encoder_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Encoder_add, METH_FASTCALL,
     "add(ts, link, scope, location, counts, events): encode one click (ClickEncoder.add)."},
    {"record", (PyCFunction)(void (*)(void))Encoder_record, METH_FASTCALL,
     "record(link, scope, location): encode one click now into the open batch; True when full."},
    {"take", (PyCFunction)Encoder_take, METH_NOARGS,
     "take(): None, or (clicks, counters, entry) of the open batch, which starts again empty."},
    {"seed", (PyCFunction)Encoder_seed, METH_VARARGS,
     "seed(high, low): 26 random id bits and a 48-bit counter base (ClickIds.seed)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Encoder_members[] = {
    {"fallback", T_OBJECT, offsetof(Encoder, fallback), READONLY, "the Python add"},
    {"pending", T_PYSSIZET, offsetof(Encoder, pending), READONLY, "clicks in the open batch"},
    {"limit", T_PYSSIZET, offsetof(Encoder, limit), 0, "record() says full from this many on"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edge._clickfast.Encoder",
    .tp_doc = "edge.clickencoder.ClickEncoder.add in C (see edge/clickencoder.py).",
    .tp_basicsize = sizeof(Encoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Encoder_init,
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_traverse = (traverseproc)Encoder_traverse,
    .tp_clear = (inquiry)Encoder_clear,
    .tp_methods = Encoder_methods,
    .tp_members = Encoder_members,
};

/* ---- Hot: the redirect of a link in the worker's cache, request to answer, in one C call ------
 *
 * edge.redirect.RedirectHandler's work for the one case that is most of the traffic: GET or HEAD
 * of /<code> whose code is in the local cache, alive, with a prebuilt answer (Target.hot). It
 * does what the handler does for it (the cache's LRU touch and tier count, the click recorded
 * with record_click, the status counted) and returns the answer's two messages; anything else
 * (a miss, an expired entry or link, a query to forward, another method or path) returns None
 * and the Python handler answers it. edge/redirect.py says why; tests/test_redirect.py compares
 * the two on the same requests. */
typedef struct {
    PyObject_HEAD
    PyObject *entries;     /* LocalCache.entries: code -> (expires, Target | None), an OrderedDict */
    PyObject *move_to_end; /* entries.move_to_end */
    PyObject *clock;       /* edge.cache.Clock: .now (monotonic), .wall */
    PyObject *tiers;       /* LinkStore.tiers, counted at index `local` */
    PyObject *served;      /* HotCounters.served, counted at the answer's slot */
    PyObject *reserved;    /* first path segments that are never codes (edge.app.RESERVED) */
    Encoder *encoder;
    PyObject *batch_full;  /* ClickRecorder.batch_full() */
    PyObject *add_failed;  /* ClickRecorder.add_failed(link, exc) */
    PyObject *empty_body;  /* the body message of a HEAD answer */
    Py_ssize_t local;
} Hot;

static PyObject *s_path, *s_now, *s_wall, *s_hot;

static int list_increment(PyObject *list, Py_ssize_t index) {
    if (!PyList_CheckExact(list) || index < 0 || index >= PyList_GET_SIZE(list)) return 0;
    PyObject *next = PyNumber_Add(PyList_GET_ITEM(list, index), one);
    if (next == NULL) return -1;
    PyList_SetItem(list, index, next); /* steals next */
    return 0;
}

/* a <= b for two numbers (float or int); -1 (no exception) for anything else */
static int float_le(PyObject *a, PyObject *b) {
    if (!(PyFloat_CheckExact(a) || PyLong_CheckExact(a)) ||
        !(PyFloat_CheckExact(b) || PyLong_CheckExact(b))) {
        return -1;
    }
    double x = PyFloat_AsDouble(a), y = PyFloat_AsDouble(b);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return x <= y;
}

static int clock_le(Hot *self, PyObject *when, PyObject *name) {
    PyObject *now = PyObject_GetAttr(self->clock, name);
    if (now == NULL) {
        PyErr_Clear();
        return -1;
    }
    int le = float_le(when, now);
    Py_DECREF(now);
    return le;
}

/* The click could not be encoded: counted and logged by add_failed(link, exc), as the handler
 * does. The redirect is answered all the same. */
static void click_failed(Hot *self, PyObject *link) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) PyException_SetTraceback(value, tb);
    PyObject *args[2] = {link, value ? value : Py_None};
    PyObject *done = PyObject_Vectorcall(self->add_failed, args, 2, NULL);
    if (done == NULL) PyErr_Clear(); /* it promises not to raise; never fail a redirect */
    Py_XDECREF(done);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* answer(scope) -> (start message, body message, ...), or None: the Python handler's turn. Whatever
 * goes wrong before the answer is decided is left to the handler (None), which does the same work
 * in Python and reports what fails there. */
static PyObject *Hot_answer(Hot *self, PyObject *scope) {
    if (!PyDict_CheckExact(scope)) Py_RETURN_NONE;
    PyObject *method = PyDict_GetItemWithError(scope, s_method);
    PyObject *path = PyDict_GetItemWithError(scope, s_path);
    if (method == NULL || path == NULL || !PyUnicode_CheckExact(method) ||
        !PyUnicode_CheckExact(path) || !PyUnicode_IS_ASCII(method) || !PyUnicode_IS_ASCII(path)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    int head;
    Py_ssize_t method_len = PyUnicode_GET_LENGTH(method);
    const char *method_text = (const char *)PyUnicode_1BYTE_DATA(method);
    if (method_len == 3 && memcmp(method_text, "GET", 3) == 0) {
        head = 0;
    } else if (method_len == 4 && memcmp(method_text, "HEAD", 4) == 0) {
        head = 1;
    } else {
        Py_RETURN_NONE;
    }
    Py_ssize_t path_len = PyUnicode_GET_LENGTH(path);
    const char *path_text = (const char *)PyUnicode_1BYTE_DATA(path);
    if (path_len < 2 || path_len > 65 || path_text[0] != '/' ||
        memchr(path_text + 1, '/', path_len - 1) != NULL) {
        Py_RETURN_NONE;
    }
    PyObject *code = PyUnicode_Substring(path, 1, path_len);
    if (code == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *result = NULL;
    PyObject *entry = PyDict_GetItemWithError(self->entries, code); /* borrowed */
    if (entry == NULL || !PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2 ||
        PyTuple_GET_ITEM(entry, 1) == Py_None) {
        goto none; /* a miss, or a remembered miss: the handler's (its tier, its 404) */
    }
    Py_INCREF(entry); /* move_to_end and the encoder's callbacks run Python */
    PyObject *target = PyTuple_GET_ITEM(entry, 1), *hot = NULL;
    int alive = clock_le(self, PyTuple_GET_ITEM(entry, 0), s_now);
    if (alive != 0) goto none_entry; /* expired (or not a float): the handler drops it */
    int reserved = PySet_Contains(self->reserved, code);
    if (reserved != 0) goto none_entry;
    hot = PyObject_GetAttr(target, s_hot);
    if (hot == NULL) goto none_entry;
    if (!PyTuple_CheckExact(hot) || PyTuple_GET_SIZE(hot) != 4) goto none_entry;
    PyObject *link = PyTuple_GET_ITEM(hot, 0), *response = PyTuple_GET_ITEM(hot, 1);
    PyObject *expires_at = PyTuple_GET_ITEM(hot, 2), *forward = PyTuple_GET_ITEM(hot, 3);
    if (!PyTuple_CheckExact(response) || PyTuple_GET_SIZE(response) != 4) goto none_entry;
    if (expires_at != Py_None && clock_le(self, expires_at, s_wall) != 0) goto none_entry;
    if (forward == Py_True) {
        PyObject *query = PyDict_GetItemWithError(scope, s_query_string);
        if (query == NULL && PyErr_Occurred()) goto none_entry;
        if (query != NULL && (!PyBytes_CheckExact(query) || PyBytes_GET_SIZE(query) > 0)) {
            goto none_entry; /* the query is merged into Location: the handler's */
        }
    } else if (forward != Py_False) {
        goto none_entry;
    }
    /* The answer is ours from here on: everything below happens for every served redirect, and a
     * failure of the counting (MemoryError at worst) is not allowed to fail the redirect. */
    PyObject *moved = PyObject_CallOneArg(self->move_to_end, code);
    Py_XDECREF(moved);
    if (moved == NULL || list_increment(self->tiers, self->local) < 0) PyErr_Clear();
    PyObject *location = PyTuple_GET_ITEM(response, 2);
    if (location != Py_None) {
        if (record_click(self->encoder, link, scope, location) < 0) click_failed(self, link);
        if (self->encoder->pending >= self->encoder->limit) {
            PyObject *done = PyObject_CallNoArgs(self->batch_full);
            if (done == NULL) PyErr_Clear(); /* it promises not to raise */
            Py_XDECREF(done);
        }
    }
    PyObject *slot = PyTuple_GET_ITEM(response, 3);
    Py_ssize_t index = PyLong_Check(slot) ? PyLong_AsSsize_t(slot) : -1;
    if (PyErr_Occurred() || list_increment(self->served, index) < 0) PyErr_Clear();
    /* GET: the prebuilt answer itself, (start, body, ...); HEAD: its start with an empty body. */
    result = head ? PyTuple_Pack(2, PyTuple_GET_ITEM(response, 0), self->empty_body)
                  : Py_NewRef(response);
    goto done_entry;
none_entry:
    PyErr_Clear();
    result = Py_NewRef(Py_None);
done_entry:
    Py_XDECREF(hot);
    Py_DECREF(entry);
    Py_DECREF(code);
    return result;
none:
    Py_DECREF(code);
    PyErr_Clear();
    Py_RETURN_NONE;
}

static int Hot_init(Hot *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"entries", "clock", "tiers", "local", "served", "reserved",
                             "encoder", "batch_full", "add_failed", "empty_body", NULL};
    PyObject *entries, *clock, *tiers, *served, *reserved, *encoder, *batch_full, *add_failed;
    PyObject *empty_body;
    Py_ssize_t local;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$O!OO!nO!O!O!OOO:Hot", kwlist, &PyDict_Type,
                                     &entries, &clock, &PyList_Type, &tiers, &local, &PyList_Type,
                                     &served, &PyFrozenSet_Type, &reserved, &EncoderType, &encoder,
                                     &batch_full, &add_failed, &empty_body)) {
        return -1;
    }
    PyObject *move_to_end = PyObject_GetAttrString(entries, "move_to_end");
    if (move_to_end == NULL) return -1;
    Py_XSETREF(self->move_to_end, move_to_end);
    Py_XSETREF(self->entries, Py_NewRef(entries));
    Py_XSETREF(self->clock, Py_NewRef(clock));
    Py_XSETREF(self->tiers, Py_NewRef(tiers));
    Py_XSETREF(self->served, Py_NewRef(served));
    Py_XSETREF(self->reserved, Py_NewRef(reserved));
    Py_XSETREF(self->encoder, (Encoder *)Py_NewRef(encoder));
    Py_XSETREF(self->batch_full, Py_NewRef(batch_full));
    Py_XSETREF(self->add_failed, Py_NewRef(add_failed));
    Py_XSETREF(self->empty_body, Py_NewRef(empty_body));
    self->local = local;
    return 0;
}

static int Hot_traverse(Hot *self, visitproc visit, void *arg) {
    Py_VISIT(self->entries);
    Py_VISIT(self->move_to_end);
    Py_VISIT(self->clock);
    Py_VISIT(self->tiers);
    Py_VISIT(self->served);
    Py_VISIT(self->reserved);
    Py_VISIT(self->encoder);
    Py_VISIT(self->batch_full);
    Py_VISIT(self->add_failed);
    Py_VISIT(self->empty_body);
    return 0;
}

static int Hot_clear(Hot *self) {
    Py_CLEAR(self->entries);
    Py_CLEAR(self->move_to_end);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->tiers);
    Py_CLEAR(self->served);
    Py_CLEAR(self->reserved);
    Py_CLEAR(self->encoder);
    Py_CLEAR(self->batch_full);
    Py_CLEAR(self->add_failed);
    Py_CLEAR(self->empty_body);
    return 0;
}

static void Hot_dealloc(Hot *self) {
    PyObject_GC_UnTrack(self);
    Hot_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Hot_methods[] = {
    {"answer", (PyCFunction)Hot_answer, METH_O,
     "answer(scope): (start, body) of a cached link's redirect, its click recorded; else None."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HotType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edge._clickfast.Hot",
    .tp_doc = "The redirect of a cached link in one C call (see edge/redirect.py).",
    .tp_basicsize = sizeof(Hot),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Hot_init,
    .tp_dealloc = (destructor)Hot_dealloc,
    .tp_traverse = (traverseproc)Hot_traverse,
    .tp_clear = (inquiry)Hot_clear,
    .tp_methods = Hot_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "edge._clickfast", "The edge's per-click encoder and hot path in C.", -1,
    NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__clickfast(void) {
    if (PyType_Ready(&EncoderType) < 0 || PyType_Ready(&HotType) < 0) return NULL;
    if ((s_headers = PyUnicode_InternFromString("headers")) == NULL ||
        (s_query_string = PyUnicode_InternFromString("query_string")) == NULL ||
        (s_method = PyUnicode_InternFromString("method")) == NULL ||
        (s_client = PyUnicode_InternFromString("client")) == NULL ||
        (s_id = PyUnicode_InternFromString("id")) == NULL ||
        (s_account_id = PyUnicode_InternFromString("account_id")) == NULL ||
        (s_code = PyUnicode_InternFromString("code")) == NULL ||
        (s_GET = PyUnicode_InternFromString("GET")) == NULL ||
        (s_path = PyUnicode_InternFromString("path")) == NULL ||
        (s_now = PyUnicode_InternFromString("now")) == NULL ||
        (s_wall = PyUnicode_InternFromString("wall")) == NULL ||
        (s_hot = PyUnicode_InternFromString("hot")) == NULL ||
        (empty_bytes = PyBytes_FromStringAndSize("", 0)) == NULL ||
        (empty_str = PyUnicode_FromStringAndSize("", 0)) == NULL ||
        (one = PyLong_FromLong(1)) == NULL) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Encoder", (PyObject *)&EncoderType) < 0 ||
        PyModule_AddObjectRef(m, "Hot", (PyObject *)&HotType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
