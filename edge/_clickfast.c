/* edge._clickfast.Encoder: edge.clickencoder.ClickEncoder.add in C, byte for byte.
 *
 * The recorder's per-click work (edge/clickencoder.py says what it is and why it is here): one
 * pass over the request headers, two dict lookups, one event built at its exact size, one counter
 * incremented. Everything that is not per click calls back into Python: a new set of request
 * headers (request_tail), a new link (link_part), a new day (utc_day), X-Forwarded-For
 * (client_ip), prefetch headers (prefetch_header), an address that needs JSON escaping (dumps).
 * A scope it does not expect (headers that are not a list or tuple of pairs of bytes) goes to the
 * Python add (fallback) whole. tests/test_clickencoder.py compares the two on the same clicks,
 * tests/test_event_spec.py both with linkedge.events.encode.
 *
 * Held by code, not by comment (tests/test_clickfast_safety.py):
 * - Any call into Python (a callback, or the cyclic collector that an allocation of a tracked
 *   object may start, running finalizers) can change what the caller passed: what is read from
 *   the scope is held by a strong reference from the moment it is read (the header list, the
 *   values the event keeps, the client, the query and method), and the header list is read again,
 *   size and item, at every step of the walk, as a Python for loop reads it.
 * - An Encoder is not re-entrant: add, record, take and seed raise RuntimeError when called from
 *   inside one of its own calls (from a callback), so its own state (the open batch, the slots,
 *   the day) only changes under the call that is changing it. It is initialised once.
 * - A call that fails leaves the open batch as it was and raises: a click joins the batch (its
 *   bytes onto the entry, its count into the counts) only once nothing after it can fail.
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
/* The event's bytes around its values, as linkedge.events.EVENT_LAYOUT spells them (the head, with
 * the version, comes from there; the rest is compiled in and checked against it at construction):
 * head, id, TS_KEY, ts, ",", link part, IP_KEY, ip, ",", tail. */
#define TS_KEY "\",\"ts\":"
#define IP_KEY "\"ip\":"

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
    int busy; /* inside add, record, take or seed: a second call from a callback is refused */
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
                self->tails_bytes = 0; /* first: what the clear releases may run Python */
                PyDict_Clear(self->tails);
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
    /* The slot holds the new link before the old references go: releasing them may run Python. */
    Slot old = *slot;
    slot->link = Py_NewRef(link);
    slot->location = Py_NewRef(location);
    slot->part = part;
    slot->day = slot->field[0] = slot->field[1] = NULL;
    slot_clear(&old);
    return slot;
}

/* The counter field of the slot's link for `day` and `bot`. New reference; NULL with an
 * exception. */
static PyObject *field_of(Encoder *self, Slot *slot, PyObject *link, PyObject *day, int bot) {
    if (slot->day != day) {
        Py_CLEAR(slot->field[0]);
        Py_CLEAR(slot->field[1]);
        Py_XSETREF(slot->day, Py_NewRef(day));
    }
    if (slot->field[bot] != NULL) return Py_NewRef(slot->field[bot]);
    PyObject *link_id = PyObject_GetAttr(link, s_id);
    if (link_id == NULL) return NULL;
    PyObject *args[3] = {link_id, day, bot ? Py_True : Py_False};
    PyObject *field = PyObject_Vectorcall(self->counter_field, args, 3, NULL);
    Py_DECREF(link_id);
    if (field == NULL) return NULL;
    if (!PyUnicode_CheckExact(field) || !PyUnicode_IS_ASCII(field)) {
        Py_DECREF(field);
        PyErr_SetString(PyExc_TypeError, "counter_field did not return an ASCII str");
        return NULL;
    }
    /* kept only if the slot still is this link's of this day (Python ran in between) */
    if (slot->link == link && slot->day == day && slot->field[bot] == NULL) {
        slot->field[bot] = Py_NewRef(field);
    }
    return field;
}

static PyObject *call_fallback(Encoder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (self->fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Encoder not initialised");
        return NULL;
    }
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

/* The arguments of request_tail, held in the tuple that is its cache key: the four header values
 * the event keeps (NULL until seen), the query, the method, whether a prefetch header said so. */
enum { R_AGENT, R_REFERER, R_LANGUAGE, R_HOST, R_QUERY, R_METHOD, R_PREFETCH, R_SIZE };

static void request_put(PyObject *request, Py_ssize_t i, PyObject *value) {
    PyObject *old = PyTuple_GET_ITEM(request, i);
    PyTuple_SET_ITEM(request, i, Py_NewRef(value));
    Py_XDECREF(old); /* bytes or a constant: releasing them runs no Python */
}

/* Every empty item of the request gets its default: done before the walk calls into Python, where
 * gc.get_objects() (in a callback, or in a thread it lets run) could find the tuple. */
static inline void request_fill(PyObject *request) {
    PyObject **items = ((PyTupleObject *)request)->ob_item;
    for (int i = R_AGENT; i < R_QUERY; i++) {
        if (items[i] == NULL) items[i] = Py_NewRef(empty_bytes);
    }
    if (items[R_QUERY] == NULL) items[R_QUERY] = Py_NewRef(Py_None);
    if (items[R_METHOD] == NULL) items[R_METHOD] = Py_NewRef(s_GET);
    if (items[R_PREFETCH] == NULL) items[R_PREFETCH] = Py_NewRef(Py_False);
}

/* Encode one click: into `events` (a list) as a new bytes object, or, with events NULL, as a line
 * of the open batch's entry. Counts it into `counts`. 0 done, -1 an exception, 1 a scope of an
 * unexpected shape (nothing done: the caller hands it to the Python add). Either way the encoder's
 * open batch and id counter are as they were unless it returns 0. */
static int encode_click(Encoder *self, long long ts_ms, PyObject *link, PyObject *scope,
                        PyObject *location, PyObject *counts, PyObject *events) {
    if (!PyDict_CheckExact(scope) || !PyUnicode_CheckExact(location)) return 1;
    PyObject *headers = PyDict_GetItemWithError(scope, s_headers);
    if (headers == NULL) {
        if (PyErr_Occurred()) return -1;
    } else if (headers == Py_None) {
        headers = NULL;
    } else if (!PyList_CheckExact(headers) && !PyTuple_CheckExact(headers)) {
        return 1;
    }
    Py_XINCREF(headers); /* before anything that may run Python */
    int is_list = headers != NULL && PyList_CheckExact(headers);
    PyObject *request = PyTuple_New(R_SIZE);
    PyObject *forwarded = NULL, *client = NULL, *tail = NULL, *day = NULL;
    PyObject *peer = NULL, *ip = NULL, *ipj = NULL, *part = NULL, *event = NULL, *key = NULL;
    int prefetch = 0, result = -1;
    if (request == NULL) goto done;
    /* The walk reads the list's size and item afresh at every step: a callback (prefetch_header),
     * or a finalizer run by the collector, may have changed it. Every pair is checked as it is
     * read; one of another shape sends the scope to the Python add, which walks it again. */
    for (Py_ssize_t i = 0; headers != NULL && i < Py_SIZE(headers); i++) {
        PyObject *pair = is_list ? PyList_GET_ITEM(headers, i) : PyTuple_GET_ITEM(headers, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0)) ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
            result = 1;
            goto done;
        }
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        switch (PyBytes_GET_SIZE(name)) {
        case 4:
            if (name_is(name, "host", 4)) { request_put(request, R_HOST, value); continue; }
            break;
        case 7:
            if (name_is(name, "referer", 7)) { request_put(request, R_REFERER, value); continue; }
            break;
        case 10:
            if (name_is(name, "user-agent", 10)) { request_put(request, R_AGENT, value); continue; }
            break;
        case 15:
            if (name_is(name, "accept-language", 15)) {
                request_put(request, R_LANGUAGE, value);
                continue;
            }
            if (name_is(name, "x-forwarded-for", 15)) {
                /* decoded first: a str is not tracked by the collector, a new list is */
                PyObject *hop = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(value),
                                                       PyBytes_GET_SIZE(value), NULL);
                if (hop == NULL) goto done;
                if (forwarded == NULL) {
                    request_fill(request); /* a new list may start the collector */
                    if ((forwarded = PyList_New(0)) == NULL) {
                        Py_DECREF(hop);
                        goto done;
                    }
                }
                int failed = PyList_Append(forwarded, hop);
                Py_DECREF(hop);
                if (failed < 0) goto done;
                continue;
            }
            break;
        }
        if (!prefetch && is_prefetch_name(self, name)) {
            request_fill(request);
            Py_INCREF(pair); /* the callback may drop it from the list */
            PyObject *args[2] = {name, value};
            PyObject *answer = PyObject_Vectorcall(self->prefetch_header, args, 2, NULL);
            Py_DECREF(pair);
            if (answer == NULL) goto done;
            prefetch = PyObject_IsTrue(answer);
            Py_DECREF(answer);
            if (prefetch < 0) goto done;
        }
    }
    request_fill(request); /* whole before the lookups below, which may run Python */
    PyObject *query = PyDict_GetItemWithError(scope, s_query_string);
    if (query == NULL) {
        if (PyErr_Occurred()) goto done;
        query = Py_None;
    }
    request_put(request, R_QUERY, query);
    PyObject *method = PyDict_GetItemWithError(scope, s_method);
    if (method == NULL) {
        if (PyErr_Occurred()) goto done;
        method = s_GET;
    }
    request_put(request, R_METHOD, method);
    if (prefetch) request_put(request, R_PREFETCH, Py_True);
    int is_bot;
    if (tail_of(self, request, &is_bot, &tail) < 0) goto done; /* ours: callbacks may clear the cache */

    client = PyDict_GetItemWithError(scope, s_client);
    if (client == NULL && PyErr_Occurred()) goto done;
    Py_XINCREF(client); /* its truth and its first item may run Python */
    int has_client = client == NULL ? 0 : PyObject_IsTrue(client);
    if (has_client < 0) goto done;
    if (has_client) {
        PyObject *first = PySequence_GetItem(client, 0);
        if (first == NULL) goto done;
        peer = PyObject_Str(first);
        Py_DECREF(first);
        if (peer == NULL) goto done;
    } else {
        peer = Py_NewRef(empty_str);
    }

    long long second = floor_div(ts_ms, 1000);
    if (second != self->second || self->day == NULL) {
        PyObject *ms = PyLong_FromLongLong(ts_ms);
        if (ms == NULL) goto done;
        PyObject *new_day = PyObject_CallOneArg(self->utc_day, ms);
        Py_DECREF(ms);
        if (new_day == NULL) goto done;
        if (!PyUnicode_CheckExact(new_day)) {
            Py_DECREF(new_day);
            PyErr_SetString(PyExc_TypeError, "utc_day did not return str");
            goto done;
        }
        if (self->day != NULL && PyUnicode_Compare(new_day, self->day) == 0) {
            Py_DECREF(new_day); /* keep the object: slots know the day by identity */
        } else {
            Py_XSETREF(self->day, new_day);
        }
        self->second = second;
    }
    day = Py_NewRef(self->day);

    if (forwarded != NULL) {
        PyObject *args[2] = {peer, forwarded};
        ip = PyObject_Vectorcall(self->client_ip, args, 2, NULL);
    } else {
        ip = Py_NewRef(peer);
    }
    if (ip == NULL) goto done;
    if (!PyUnicode_Check(ip)) {
        PyErr_SetString(PyExc_TypeError, "client_ip did not return str");
        goto done;
    }
    /* The address between quotes, or (never seen from a server) dumps' JSON string of it. */
    int ip_quote = ip_plain(ip);
    if (!ip_quote && (ipj = ip_json(self, ip)) == NULL) goto done;
    const char *ip_text = ip_quote ? (const char *)PyUnicode_1BYTE_DATA(ip) : PyBytes_AS_STRING(ipj);
    Py_ssize_t ip_len = ip_quote ? PyUnicode_GET_LENGTH(ip) + 2 : PyBytes_GET_SIZE(ipj);

    Slot *slot = slot_of(self, link, location);
    if (slot == NULL) goto done;
    part = Py_NewRef(slot->part);
    if ((key = field_of(self, slot, link, day, is_bot)) == NULL) goto done;

    /* From here on nothing calls into Python: the event is written, counted, then committed. */
    if (ts_ms != self->ms) set_prefix(self, ts_ms);
    uint64_t low = (self->low + self->counter + 1) & MASK_48;
    const char *ts_text = self->ts_text;
    int ts_len = self->ts_len;
    Py_ssize_t part_len = PyBytes_GET_SIZE(part);
    Py_ssize_t tail_len = PyBytes_GET_SIZE(tail);
    /* head + prefix + 12 hex + TS_KEY + ts + ',' + part + IP_KEY + ip + ',' + tail */
    Py_ssize_t size = self->head_len + PREFIX_LEN + 12 + (sizeof TS_KEY - 1) + ts_len + 1 +
                      part_len + (sizeof IP_KEY - 1) + ip_len + 1 + tail_len;
    char *p;
    if (events != NULL) {
        if ((event = PyBytes_FromStringAndSize(NULL, size)) == NULL) goto done;
        p = PyBytes_AS_STRING(event);
    } else if ((p = entry_reserve(self, size + 1)) == NULL) {
        goto done;
    }
    memcpy(p, self->head, self->head_len);
    p += self->head_len;
    memcpy(p, self->prefix, PREFIX_LEN);
    p += PREFIX_LEN;
    put_hex(p, low, 12);
    p += 12;
    memcpy(p, TS_KEY, sizeof TS_KEY - 1);
    p += sizeof TS_KEY - 1;
    memcpy(p, ts_text, ts_len);
    p += ts_len;
    *p++ = ',';
    memcpy(p, PyBytes_AS_STRING(part), part_len);
    p += part_len;
    memcpy(p, IP_KEY, sizeof IP_KEY - 1);
    p += sizeof IP_KEY - 1;
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
    if (count == NULL && PyErr_Occurred()) goto done;
    PyObject *next = count == NULL ? PyLong_FromLong(1) : PyNumber_Add(count, one);
    if (next == NULL) goto done;
    if (events != NULL && PyList_Append(events, event) < 0) {
        Py_DECREF(next);
        goto done;
    }
    int failed = PyDict_SetItem(counts, key, next);
    Py_DECREF(next);
    if (failed < 0) { /* keep events and counts in step */
        if (events != NULL) {
            PyList_SetSlice(events, PyList_GET_SIZE(events) - 1, PyList_GET_SIZE(events), NULL);
        }
        goto done;
    }
    self->counter++; /* the id is taken only by a click that is counted */
    if (events == NULL) { /* the line joins the entry only now that it is counted */
        self->entry_len += size + 1;
        self->pending++;
    }
    result = 0;
done:
    Py_XDECREF(key);
    Py_XDECREF(event);
    Py_XDECREF(part);
    Py_XDECREF(ipj);
    Py_XDECREF(ip);
    Py_XDECREF(day);
    Py_XDECREF(peer);
    Py_XDECREF(client);
    Py_XDECREF(tail);
    Py_XDECREF(forwarded);
    Py_XDECREF(request);
    Py_XDECREF(headers);
    return result;
}

/* Every call that reads or changes the encoder's state goes through enter/leave: refused on an
 * encoder that was never initialised, or from inside one of its own calls (a callback). */
static int encoder_enter(Encoder *self) {
    if (self->slots == NULL || self->counts == NULL) { /* never initialised, or cleared */
        PyErr_SetString(PyExc_RuntimeError, "Encoder not initialised");
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Encoder called again from inside one of its calls");
        return -1;
    }
    self->busy = 1;
    return 0;
}

static void encoder_leave(Encoder *self) { self->busy = 0; }

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
    double ms = ts * 1000;
    if (!(ms > -9e18 && ms < 9e18)) { /* NaN included: the cast below would be undefined */
        PyErr_SetString(PyExc_OverflowError, "ts out of range");
        return NULL;
    }
    if (encoder_enter(self) < 0) return NULL;
    int done = encode_click(self, (long long)ms, args[1], args[2], args[3], args[4], args[5]);
    encoder_leave(self);
    if (done == 1) return call_fallback(self, args, nargs);
    return done < 0 ? NULL : Py_NewRef(Py_None);
}

/* Adds the counts of `src` (counter field -> clicks, the Python add's) into `dst`, all or none: 0,
 * or -1 with an exception set and dst as it was. Fields must be ASCII str and counts int, as
 * take() writes them. */
static int counts_merge(PyObject *dst, PyObject *src) {
    Py_ssize_t n = PyDict_GET_SIZE(src), pos = 0, i = 0;
    PyObject *field, *count;
    while (PyDict_Next(src, &pos, &field, &count)) {
        if (!PyUnicode_CheckExact(field) || !PyUnicode_IS_ASCII(field) || !PyLong_CheckExact(count)) {
            PyErr_SetString(PyExc_TypeError, "counter fields must be ASCII str, counts int");
            return -1;
        }
    }
    PyObject *olds = PyTuple_New(n), *sums = PyTuple_New(n);
    if (olds == NULL || sums == NULL) goto fail;
    for (pos = 0; PyDict_Next(src, &pos, &field, &count); i++) { /* every allocation first */
        PyObject *old = PyDict_GetItemWithError(dst, field);
        if (old == NULL && PyErr_Occurred()) goto fail;
        PyObject *sum = old == NULL ? Py_NewRef(count) : PyNumber_Add(old, count);
        if (sum == NULL) goto fail;
        PyTuple_SET_ITEM(olds, i, Py_XNewRef(old));
        PyTuple_SET_ITEM(sums, i, sum);
    }
    for (pos = 0, i = 0; PyDict_Next(src, &pos, &field, &count); i++) {
        if (PyDict_SetItem(dst, field, PyTuple_GET_ITEM(sums, i)) < 0) {
            /* put back what was set: a field that is there is replaced or deleted in place */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            Py_ssize_t set = i;
            for (pos = 0, i = 0; i < set && PyDict_Next(src, &pos, &field, &count); i++) {
                PyObject *old = PyTuple_GET_ITEM(olds, i);
                if ((old == NULL ? PyDict_DelItem(dst, field) : PyDict_SetItem(dst, field, old)) < 0) {
                    PyErr_Clear();
                }
            }
            PyErr_Restore(type, value, tb);
            goto fail;
        }
    }
    Py_DECREF(olds);
    Py_DECREF(sums);
    return 0;
fail:
    Py_XDECREF(olds);
    Py_XDECREF(sums);
    return -1;
}

/* One click now into the open batch (record()'s work): 0, or -1 with an exception set and the
 * batch as it was. The caller has entered the encoder. */
static int record_click(Encoder *self, PyObject *link, PyObject *scope, PyObject *location) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now); /* time.time()'s clock */
    long long ts_ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    int done = encode_click(self, ts_ms, link, scope, location, self->counts, NULL);
    if (done != 1) return done;
    /* A scope C does not expect: the Python add, into a list and counts of its own; what it gives
     * joins the open batch only whole, and only if it did not raise. */
    PyObject *events = PyList_New(0), *counts = PyDict_New();
    PyObject *ts = PyFloat_FromDouble(((double)ts_ms + 0.5) / 1000);
    done = -1;
    if (events == NULL || counts == NULL || ts == NULL) goto done;
    PyObject *call[6] = {ts, link, scope, location, counts, events};
    PyObject *answer = call_fallback(self, call, 6);
    if (answer == NULL) goto done;
    Py_DECREF(answer);
    Py_ssize_t n = PyList_GET_SIZE(events), total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *event = PyList_GET_ITEM(events, i);
        if (!PyBytes_CheckExact(event) || PyBytes_GET_SIZE(event) == 0 ||
            memchr(PyBytes_AS_STRING(event), '\n', PyBytes_GET_SIZE(event)) != NULL) {
            PyErr_SetString(PyExc_TypeError, "add did not append events of one line of bytes");
            goto done;
        }
        total += PyBytes_GET_SIZE(event) + 1;
    }
    char *p = total ? entry_reserve(self, total) : NULL;
    if (total && p == NULL) goto done;
    if (counts_merge(self->counts, counts) < 0) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *event = PyList_GET_ITEM(events, i);
        memcpy(p, PyBytes_AS_STRING(event), PyBytes_GET_SIZE(event));
        p += PyBytes_GET_SIZE(event);
        *p++ = '\n';
    }
    self->entry_len += total;
    self->pending += n;
    done = 0;
done:
    Py_XDECREF(ts);
    Py_XDECREF(counts);
    Py_XDECREF(events);
    return done;
}

/* record(link, scope, location) -> whether the open batch is full */
static PyObject *Encoder_record(Encoder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "record() takes 3 arguments");
        return NULL;
    }
    if (encoder_enter(self) < 0) return NULL;
    int done = record_click(self, args[0], args[1], args[2]);
    encoder_leave(self);
    if (done < 0) return NULL;
    return PyBool_FromLong(self->pending >= self->limit);
}

/* take()'s work, the encoder entered. */
static PyObject *take_batch(Encoder *self) {
    if (self->pending == 0) Py_RETURN_NONE;
    if (self->entry == NULL || self->entry_len < self->pending * 2 ||
        self->entry_len > PyBytes_GET_SIZE(self->entry)) { /* each click: at least "x\n" */
        PyErr_SetString(PyExc_SystemError, "the open batch's entry does not hold its clicks");
        return NULL;
    }
    /* The objects the collector tracks first (making them may run finalizers), then what reads
     * the batch; the batch is let go only once the whole answer is made, so a failed allocation
     * leaves it as it was (the next take() returns it). */
    PyObject *fresh = PyDict_New(), *answer = PyTuple_New(3);
    PyObject *counters = NULL, *entry = NULL, *number = NULL;
    if (fresh == NULL || answer == NULL) goto fail;
    /* counters: "<field> <clicks>" lines (linkedge.events.join_counters), ASCII fields */
    Py_ssize_t size = 0, pos = 0;
    PyObject *field, *count;
    while (PyDict_Next(self->counts, &pos, &field, &count)) {
        if (!PyUnicode_IS_ASCII(field) || !PyLong_CheckExact(count)) {
            PyErr_SetString(PyExc_TypeError, "counter fields must be ASCII str, counts int");
            goto fail;
        }
        size += PyUnicode_GET_LENGTH(field) + 1 + 21 + 1;
    }
    if ((counters = PyBytes_FromStringAndSize(NULL, size)) == NULL) goto fail;
    char *p = PyBytes_AS_STRING(counters);
    pos = 0;
    while (PyDict_Next(self->counts, &pos, &field, &count)) {
        if (p != PyBytes_AS_STRING(counters)) *p++ = '\n';
        memcpy(p, PyUnicode_1BYTE_DATA(field), PyUnicode_GET_LENGTH(field));
        p += PyUnicode_GET_LENGTH(field);
        *p++ = ' ';
        long long n = PyLong_AsLongLong(count);
        if (n == -1 && PyErr_Occurred()) goto fail;
        p += put_decimal(p, n);
    }
    /* copied, not shrunk in place: a failed _PyBytes_Resize frees its object */
    PyObject *exact = PyBytes_FromStringAndSize(PyBytes_AS_STRING(counters), p - PyBytes_AS_STRING(counters));
    if (exact == NULL) goto fail;
    Py_SETREF(counters, exact);
    Py_ssize_t clicks = self->pending, length = self->entry_len - 1; /* without the last newline */
    if ((entry = PyBytes_FromStringAndSize(PyBytes_AS_STRING(self->entry), length)) == NULL) goto fail;
    if ((number = PyLong_FromSsize_t(clicks)) == NULL) goto fail;
    PyTuple_SET_ITEM(answer, 0, number);
    PyTuple_SET_ITEM(answer, 1, counters);
    PyTuple_SET_ITEM(answer, 2, entry);
    /* the next batch starts at this one's size */
    Py_CLEAR(self->entry);
    self->entry_hint = length + length / 4;
    self->entry_len = 0;
    self->pending = 0;
    Py_SETREF(self->counts, fresh);
    return answer;
fail:
    Py_XDECREF(number);
    Py_XDECREF(entry);
    Py_XDECREF(counters);
    Py_XDECREF(answer);
    Py_XDECREF(fresh);
    return NULL;
}

/* take() -> None, or (clicks, counters, entry) of the open batch, which starts again empty */
static PyObject *Encoder_take(Encoder *self, PyObject *Py_UNUSED(ignored)) {
    if (encoder_enter(self) < 0) return NULL;
    PyObject *answer = take_batch(self);
    encoder_leave(self);
    return answer;
}

static PyObject *Encoder_seed(Encoder *self, PyObject *args) {
    unsigned long long high, low;
    if (!PyArg_ParseTuple(args, "KK:seed", &high, &low)) return NULL;
    if (encoder_enter(self) < 0) return NULL;
    self->high = high & MASK_26;
    self->low = low & MASK_48;
    self->counter = 0;
    self->ms = -1;
    encoder_leave(self);
    Py_RETURN_NONE;
}

/* layout: linkedge.events.EVENT_LAYOUT, the bytes around the event's values */
static int layout_check(Encoder *self, PyObject *layout) {
    static const char *const compiled[] = {NULL, TS_KEY, ",", IP_KEY, ","};
    if (PyTuple_GET_SIZE(layout) != 5) goto differs;
    for (int i = 0; i < 5; i++) {
        PyObject *piece = PyTuple_GET_ITEM(layout, i);
        if (!PyBytes_CheckExact(piece)) goto differs;
        if (i == 0) {
            if (PyBytes_GET_SIZE(piece) >= (Py_ssize_t)sizeof self->head) goto differs;
        } else if (!name_is(piece, compiled[i], (Py_ssize_t)strlen(compiled[i]))) {
            goto differs;
        }
    }
    PyObject *head = PyTuple_GET_ITEM(layout, 0);
    self->head_len = PyBytes_GET_SIZE(head);
    memcpy(self->head, PyBytes_AS_STRING(head), self->head_len);
    return 0;
differs:
    PyErr_SetString(PyExc_ValueError,
                    "layout is not the event layout edge._clickfast was built for "
                    "(5 bytes: a head under 32 bytes, '\",\"ts\":', ',', '\"ip\":', ','): rebuild it");
    return -1;
}

static int Encoder_init(Encoder *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"fallback", "request_tail", "client_ip", "prefetch_header",
                             "prefetch_names", "link_part", "utc_day", "counter_field", "dumps",
                             "layout", "tails_kept", "tails_bytes", "tail_cuts", "tail_overhead",
                             "links_kept", NULL};
    PyObject *fallback, *request_tail, *client_ip, *prefetch_header, *names, *link_part, *utc_day;
    PyObject *counter_field, *dumps, *layout;
    Py_ssize_t tails_max, tails_bytes_max, tail_cuts[5], tail_overhead, links_max;
    if (self->slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "an Encoder is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$OOOOO!OOOOO!nn(nnnnn)nn:Encoder", kwlist,
                                     &fallback, &request_tail, &client_ip, &prefetch_header,
                                     &PyTuple_Type, &names, &link_part, &utc_day, &counter_field,
                                     &dumps, &PyTuple_Type, &layout, &tails_max, &tails_bytes_max,
                                     &tail_cuts[0], &tail_cuts[1], &tail_cuts[2], &tail_cuts[3],
                                     &tail_cuts[4], &tail_overhead, &links_max)) {
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
    if (layout_check(self, layout) < 0) return -1;
    PyObject *tails = PyDict_New(), *links = PyDict_New(), *counts = PyDict_New();
    Slot *slots = PyMem_Calloc(SLOTS, sizeof(Slot));
    if (tails == NULL || links == NULL || counts == NULL || slots == NULL) {
        Py_XDECREF(tails);
        Py_XDECREF(links);
        Py_XDECREF(counts);
        PyMem_Free(slots);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return -1;
    }
    self->fallback = Py_NewRef(fallback);
    self->request_tail = Py_NewRef(request_tail);
    self->client_ip = Py_NewRef(client_ip);
    self->prefetch_header = Py_NewRef(prefetch_header);
    self->link_part = Py_NewRef(link_part);
    self->utc_day = Py_NewRef(utc_day);
    self->dumps = Py_NewRef(dumps);
    self->counter_field = Py_NewRef(counter_field);
    self->tails = tails;
    self->links = links;
    self->counts = counts;
    self->tails_max = tails_max;
    self->tails_bytes = 0;
    self->tails_bytes_max = tails_bytes_max;
    memcpy(self->tail_cuts, tail_cuts, sizeof tail_cuts);
    self->tail_overhead = tail_overhead;
    self->links_max = links_max;
    self->second = self->ms = -1;
    self->high = self->low = self->counter = 0;
    self->entry_len = self->pending = 0;
    self->entry_hint = 4096;
    self->limit = PY_SSIZE_T_MAX;
    self->slots = slots; /* last: it says the encoder is ready */
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
    PyObject *item = Py_NewRef(PyList_GET_ITEM(list, index)); /* its __add__ may change the list */
    PyObject *next = PyNumber_Add(item, one);
    Py_DECREF(item);
    if (next == NULL) return -1;
    return PyList_SetItem(list, index, next); /* steals next; checks the index again */
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
    if (self->entries == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Hot not initialised");
        return NULL;
    }
    if (!PyDict_CheckExact(scope)) Py_RETURN_NONE;
    /* Each value read from the scope is used up before the next lookup, which may run Python. */
    PyObject *method = PyDict_GetItemWithError(scope, s_method);
    if (method == NULL || !PyUnicode_CheckExact(method) || !PyUnicode_IS_ASCII(method)) {
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
    PyObject *path = PyDict_GetItemWithError(scope, s_path);
    if (path == NULL || !PyUnicode_CheckExact(path) || !PyUnicode_IS_ASCII(path)) {
        PyErr_Clear();
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
    /* GET: the prebuilt answer itself, (start, body, ...); HEAD: its start with an empty body,
     * made before anything is counted, so that a failure here leaves nothing counted. */
    result = head ? PyTuple_Pack(2, PyTuple_GET_ITEM(response, 0), self->empty_body)
                  : Py_NewRef(response);
    if (result == NULL) goto none_entry;
    /* The answer is ours from here on: everything below happens for every served redirect, and a
     * failure of the counting (MemoryError at worst) is not allowed to fail the redirect. */
    PyObject *moved = PyObject_CallOneArg(self->move_to_end, code);
    Py_XDECREF(moved);
    if (moved == NULL || list_increment(self->tiers, self->local) < 0) PyErr_Clear();
    PyObject *location = PyTuple_GET_ITEM(response, 2);
    if (location != Py_None) {
        Encoder *encoder = self->encoder;
        int recorded = encoder_enter(encoder);
        if (recorded == 0) {
            recorded = record_click(encoder, link, scope, location);
            encoder_leave(encoder);
        }
        if (recorded < 0) click_failed(self, link);
        if (encoder->pending >= encoder->limit) {
            PyObject *done = PyObject_CallNoArgs(self->batch_full);
            if (done == NULL) PyErr_Clear(); /* it promises not to raise */
            Py_XDECREF(done);
        }
    }
    PyObject *slot = PyTuple_GET_ITEM(response, 3);
    Py_ssize_t index = PyLong_Check(slot) ? PyLong_AsSsize_t(slot) : -1;
    if (PyErr_Occurred() || list_increment(self->served, index) < 0) PyErr_Clear();
    goto done_entry;
none_entry:
    PyErr_Clear();
    Py_XSETREF(result, Py_NewRef(Py_None));
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
    if (self->entries != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a Hot is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$O!OO!nO!O!O!OOO:Hot", kwlist, &PyDict_Type,
                                     &entries, &clock, &PyList_Type, &tiers, &local, &PyList_Type,
                                     &served, &PyFrozenSet_Type, &reserved, &EncoderType, &encoder,
                                     &batch_full, &add_failed, &empty_body)) {
        return -1;
    }
    PyObject *move_to_end = PyObject_GetAttrString(entries, "move_to_end");
    if (move_to_end == NULL) return -1;
    self->move_to_end = move_to_end;
    self->clock = Py_NewRef(clock);
    self->tiers = Py_NewRef(tiers);
    self->served = Py_NewRef(served);
    self->reserved = Py_NewRef(reserved);
    self->encoder = (Encoder *)Py_NewRef(encoder);
    self->batch_full = Py_NewRef(batch_full);
    self->add_failed = Py_NewRef(add_failed);
    self->empty_body = Py_NewRef(empty_body);
    self->local = local;
    self->entries = Py_NewRef(entries); /* last: it says the Hot is ready */
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

#ifdef CLICKFAST_FAULTS
/* Fault injection, in test builds only (-DCLICKFAST_FAULTS, tests/test_clickfast_faults.py):
 * _fail_after(n) makes the allocation n allocations from now (of the MEM and OBJ domains, so of
 * every object) fail, once; _fail_after(-1) stops counting. _fail_hold(True) stops the count
 * until _fail_hold(False): a test holds it around callbacks into libraries that do not survive a
 * failed allocation (orjson), so that the failures land in this module's calls. */
static PyMemAllocatorEx fault_base[2];
static const PyMemAllocatorDomain fault_domains[2] = {PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ};
static long fault_countdown = -1;
static int fault_installed = 0, fault_held = 0;

static int fault_now(void) {
    if (fault_countdown < 0 || fault_held) return 0;
    return fault_countdown-- == 0;
}

static void *fault_malloc(void *ctx, size_t size) {
    PyMemAllocatorEx *base = ctx;
    return fault_now() ? NULL : base->malloc(base->ctx, size);
}

static void *fault_calloc(void *ctx, size_t n, size_t size) {
    PyMemAllocatorEx *base = ctx;
    return fault_now() ? NULL : base->calloc(base->ctx, n, size);
}

static void *fault_realloc(void *ctx, void *ptr, size_t size) {
    PyMemAllocatorEx *base = ctx;
    return fault_now() ? NULL : base->realloc(base->ctx, ptr, size);
}

static void fault_free(void *ctx, void *ptr) {
    PyMemAllocatorEx *base = ctx;
    base->free(base->ctx, ptr);
}

static PyObject *fail_after(PyObject *module, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (!fault_installed) {
        for (int i = 0; i < 2; i++) {
            PyMem_GetAllocator(fault_domains[i], &fault_base[i]);
            PyMemAllocatorEx hook = {&fault_base[i], fault_malloc, fault_calloc, fault_realloc,
                                     fault_free};
            PyMem_SetAllocator(fault_domains[i], &hook);
        }
        fault_installed = 1;
    }
    fault_countdown = n < 0 ? -1 : n;
    Py_RETURN_NONE;
}

static PyObject *fail_hold(PyObject *module, PyObject *arg) {
    int held = PyObject_IsTrue(arg);
    if (held < 0) return NULL;
    fault_held = held;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"_fail_after", fail_after, METH_O, "_fail_after(n): the n-th allocation from now fails."},
    {"_fail_hold", fail_hold, METH_O, "_fail_hold(held): no allocation fails while held."},
    {NULL, NULL, 0, NULL},
};
#else
static PyMethodDef module_methods[] = {{NULL, NULL, 0, NULL}};
#endif

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "edge._clickfast", "The edge's per-click encoder and hot path in C.", -1,
    module_methods, NULL, NULL, NULL, NULL,
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
