/* Optional C accelerator for tfdrop.codec.wire.parse_features.
 *
 * The same canonical-layout Example decoder as the pure-Python fast path in wire.py, line for
 * line: it returns the same {key: (kind, values, feature_bytes)} dict, or None where wire.py
 * raises NotCanonical (the caller then falls back to protobuf, the reference parser), and the
 * tuple (key, count) where a list has more than max_values values (counted before the list is
 * built; wire.py raises the limit error). It exists
 * because the pure-Python walk costs ~2 us per feature and an OD record has ~16 of them
 * (the target: 150,000 annotation-only records/s with the schema check). Tests check it
 * against both wire.py and protobuf. Pure computation: no I/O, no global state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define BYTES_KIND 1
#define FLOAT_KIND 2
#define INT64_KIND 3

/* 0 on success; -1 if the varint runs past `end` or past 64 bits (not canonical). */
static int
read_varint(const unsigned char *buf, Py_ssize_t end, Py_ssize_t *pos, uint64_t *out)
{
    uint64_t result = 0;
    int shift = 0;
    while (*pos < end) {
        unsigned char b = buf[(*pos)++];
        result |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            /* protobuf writes the shortest form within 64 bits and would re-serialize an
             * over-long varint (a trailing 0x00) or bits past 64 differently */
            if ((b == 0 && shift) || (shift == 63 && b > 1))
                return -1;
            *out = result;
            return 0;
        }
        shift += 7;
        if (shift > 63)
            return -1;
    }
    return -1;
}

/* A length prefix that must also fit inside [pos, end). */
static int
read_len(const unsigned char *buf, Py_ssize_t end, Py_ssize_t *pos, Py_ssize_t *out)
{
    uint64_t v;
    if (read_varint(buf, end, pos, &v) < 0)
        return -1;
    if (v > (uint64_t)(end - *pos))
        return -1;
    *out = (Py_ssize_t)v;
    return 0;
}

/* protobuf refuses a map key (a proto3 string) that is not UTF-8: so must the fast path. */
static int
utf8_ok(const unsigned char *s, Py_ssize_t n)
{
    PyObject *u = PyUnicode_DecodeUTF8((const char *)s, n, "strict");
    if (u == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(u);
    return 1;
}

static int
key_ok(const unsigned char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] >= 0x80)
            return utf8_ok(s, n); /* ASCII keys (all of the OD API's) skip the decode */
    return 1;
}

/* Decode one list spanning buf[pos:end]; NULL with no exception set = not canonical, or
 * (with *over set to the count found) a list of more than cap values, before it is built. */
static PyObject *
decode_values(int kind, const unsigned char *buf, Py_ssize_t pos, Py_ssize_t end,
              Py_ssize_t cap, Py_ssize_t *over)
{
    PyObject *list = PyList_New(0);
    if (list == NULL || pos == end)
        return list;
    if (kind == BYTES_KIND) {
        while (pos < end) {
            Py_ssize_t n;
            if (buf[pos] != 0x0A)
                goto not_canonical;
            if (PyList_GET_SIZE(list) == cap) {
                *over = cap + 1;
                goto not_canonical;
            }
            pos++;
            if (read_len(buf, end, &pos, &n) < 0)
                goto not_canonical;
            PyObject *b = PyBytes_FromStringAndSize((const char *)buf + pos, n);
            if (b == NULL || PyList_Append(list, b) < 0) {
                Py_XDECREF(b);
                goto error;
            }
            Py_DECREF(b);
            pos += n;
        }
        return list;
    }
    Py_ssize_t n;
    if (buf[pos] != 0x0A)
        goto not_canonical; /* an unpacked list */
    pos++;
    if (read_len(buf, end, &pos, &n) < 0 || pos + n != end || n == 0)
        goto not_canonical; /* split in runs, or an empty run protobuf would not write */
    if (kind == FLOAT_KIND) {
        if (n % 4)
            goto not_canonical;
        if (n / 4 > cap) {
            *over = n / 4;
            goto not_canonical;
        }
        for (Py_ssize_t q = pos; q < end; q += 4) {
            double d = PyFloat_Unpack4((const char *)buf + q, 1);
            if (d == -1.0 && PyErr_Occurred())
                goto error;
            PyObject *f = PyFloat_FromDouble(d);
            if (f == NULL || PyList_Append(list, f) < 0) {
                Py_XDECREF(f);
                goto error;
            }
            Py_DECREF(f);
        }
        return list;
    }
    if (n > cap) { /* at least one byte per varint; each ends with a byte < 0x80 */
        Py_ssize_t count = 0;
        for (Py_ssize_t q = pos; q < end; q++)
            count += buf[q] < 0x80;
        if (count > cap) {
            *over = count;
            goto not_canonical;
        }
    }
    while (pos < end) { /* INT64_KIND */
        uint64_t v;
        if (read_varint(buf, end, &pos, &v) < 0)
            goto not_canonical;
        PyObject *i = PyLong_FromLongLong((long long)(int64_t)v);
        if (i == NULL || PyList_Append(list, i) < 0) {
            Py_XDECREF(i);
            goto error;
        }
        Py_DECREF(i);
    }
    return list;
not_canonical:
    Py_DECREF(list);
    return NULL;
error:
    Py_DECREF(list);
    return NULL;
}

static int
put(PyObject *out, const unsigned char *key, Py_ssize_t klen, long kind, PyObject *values,
    const unsigned char *feat, Py_ssize_t flen)
{
    PyObject *k = PyBytes_FromStringAndSize((const char *)key, klen);
    PyObject *f = PyBytes_FromStringAndSize((const char *)feat, flen);
    PyObject *t = (k && f) ? Py_BuildValue("(lOO)", kind, values, f) : NULL;
    int rc = t ? PyDict_Contains(out, k) : -1;
    if (rc == 0) /* 1: a key twice (protobuf keeps the last, TensorFlow may not): not canonical */
        rc = PyDict_SetItem(out, k, t);
    Py_XDECREF(k);
    Py_XDECREF(f);
    Py_XDECREF(t);
    return rc;
}

static PyObject *
parse_features(PyObject *self, PyObject *args)
{
    char *raw;
    Py_ssize_t size, cap, over = 0;
    PyObject *arg;
    if (!PyArg_ParseTuple(args, "O!n", &PyBytes_Type, &arg, &cap))
        return NULL;
    if (PyBytes_AsStringAndSize(arg, &raw, &size) < 0)
        return NULL;
    const unsigned char *data = (const unsigned char *)raw;
    PyObject *out = PyDict_New();
    if (out == NULL || size == 0)
        return out;
    Py_ssize_t pos = 1, flen;
    if (data[0] != 0x0A || read_len(data, size, &pos, &flen) < 0 || pos + flen != size)
        goto not_canonical;
    Py_ssize_t end = size;
    while (pos < end) {
        Py_ssize_t elen, klen, vlen, llen;
        if (data[pos] != 0x0A)
            goto not_canonical;
        pos++;
        if (read_len(data, end, &pos, &elen) < 0)
            goto not_canonical;
        Py_ssize_t eend = pos + elen;
        if (pos >= eend || data[pos] != 0x0A)
            goto not_canonical;
        pos++;
        if (read_len(data, eend, &pos, &klen) < 0)
            goto not_canonical;
        const unsigned char *key = data + pos;
        if (!key_ok(key, klen))
            goto not_canonical;
        pos += klen;
        if (pos == eend || data[pos] != 0x12)
            goto not_canonical; /* a key without a value: protobuf takes it, TF refuses */
        pos++;
        if (read_len(data, eend, &pos, &vlen) < 0 || pos + vlen != eend)
            goto not_canonical;
        Py_ssize_t vend = eend;
        const unsigned char *feat = data + pos;
        if (pos == vend) {
            PyObject *empty = PyList_New(0);
            int rc = empty ? put(out, key, klen, 0, empty, feat, 0) : -1;
            Py_XDECREF(empty);
            if (rc < 0)
                goto error;
            if (rc > 0)
                goto not_canonical;
            continue;
        }
        int kind;
        switch (data[pos]) {
        case 0x0A: kind = BYTES_KIND; break;
        case 0x12: kind = FLOAT_KIND; break;
        case 0x1A: kind = INT64_KIND; break;
        default: goto not_canonical;
        }
        Py_ssize_t lpos = pos + 1;
        if (read_len(data, vend, &lpos, &llen) < 0 || lpos + llen != vend)
            goto not_canonical;
        PyObject *values = decode_values(kind, data, lpos, vend, cap, &over);
        if (values == NULL) {
            if (PyErr_Occurred())
                goto error;
            if (over) {
                Py_DECREF(out);
                return Py_BuildValue("(y#n)", (const char *)key, klen, over);
            }
            goto not_canonical;
        }
        int rc = put(out, key, klen, kind, values, feat, vend - pos);
        Py_DECREF(values);
        if (rc < 0)
            goto error;
        if (rc > 0)
            goto not_canonical;
        pos = vend;
    }
    return out;
not_canonical:
    Py_DECREF(out);
    Py_RETURN_NONE;
error:
    Py_DECREF(out);
    return NULL;
}

/* boxes_ok(xmin, ymin, xmax, ymax): all four lists of floats, equal length, every value in
 * [0, 1] (so finite) and min <= max per object. False on anything else; the caller then
 * builds the detailed per-object problems in Python. */
static PyObject *
boxes_ok(PyObject *self, PyObject *args)
{
    PyObject *l[4];
    if (!PyArg_ParseTuple(args, "O!O!O!O!", &PyList_Type, &l[0], &PyList_Type, &l[1],
                          &PyList_Type, &l[2], &PyList_Type, &l[3]))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(l[0]);
    for (int k = 1; k < 4; k++)
        if (PyList_GET_SIZE(l[k]) != n)
            Py_RETURN_FALSE;
    for (Py_ssize_t i = 0; i < n; i++) {
        double v[4];
        for (int k = 0; k < 4; k++) {
            PyObject *o = PyList_GET_ITEM(l[k], i);
            if (!PyFloat_CheckExact(o))
                Py_RETURN_FALSE;
            v[k] = PyFloat_AS_DOUBLE(o);
            if (!(v[k] >= 0.0 && v[k] <= 1.0)) /* false for NaN too */
                Py_RETURN_FALSE;
        }
        if (v[0] > v[2] || v[1] > v[3]) /* xmin > xmax or ymin > ymax */
            Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}


/* ---- od_check: an all-clear schema check without building Python objects ------------------
 *
 * od_check(data, text_ids, max_values[, labels]) -> (n_objects, enc_start, enc_end, sha_start,
 * sha_end, fmt_start, fmt_end, height, width[, class texts, class ids]) when the record is in
 * the canonical layout AND passes every rule of parse_example and
 * tfdrop.codec.schema.check_parsed (except the SHA-256 comparison, which the caller does over
 * the returned spans; the embedded image's header and the masks' PNG sizes are checked here);
 * None otherwise, and the caller runs the Python path, which names each problem. Every list is walked to its end (a value past the first one of a single-value key
 * can be malformed too), a single-value key present must hold exactly one value, no key may
 * appear twice, no list may hold more than max_values values. It may say None for a valid
 * record (it is conservative: ids < 1, empty texts, many unknown keys), never the other way
 * round: tests check that "not None" implies "no problems" on records corrupted byte by byte.
 * text_ids: a dict {class text (bytes): id} from the label map, or None.
 */
enum {
    K_FILENAME, K_SOURCE_ID, K_FORMAT, K_SHA, K_ENCODED, K_HEIGHT, K_WIDTH,
    K_XMIN, K_XMAX, K_YMIN, K_YMAX, K_LABEL, K_TEXT, K_DIFFICULT, K_TRUNCATED, K_OCCLUDED,
    K_VIEW, K_MASK, K_CROWD, K_AREA, K_COUNT
};
static const char *const KEY_NAMES[K_COUNT] = {
    "image/filename", "image/source_id", "image/format", "image/key/sha256", "image/encoded",
    "image/height", "image/width", "image/object/bbox/xmin", "image/object/bbox/xmax",
    "image/object/bbox/ymin", "image/object/bbox/ymax", "image/object/class/label",
    "image/object/class/text", "image/object/difficult", "image/object/truncated",
    "image/object/occluded", "image/object/view", "image/object/mask", "image/object/is_crowd",
    "image/object/area",
};
#define N_SCALARS 7 /* K_FILENAME .. K_WIDTH: one value each (a FixedLenFeature([]) in TF) */
#define KP_PREFIX "image/object/keypoint/"
#define KP_PREFIX_LEN 22
#define MAX_UNKNOWN 64 /* unknown keys checked for repeats; more: leave it to Python */
static const int KEY_KINDS[K_COUNT] = {
    BYTES_KIND, BYTES_KIND, BYTES_KIND, BYTES_KIND, BYTES_KIND, INT64_KIND, INT64_KIND,
    FLOAT_KIND, FLOAT_KIND, FLOAT_KIND, FLOAT_KIND, INT64_KIND, BYTES_KIND, INT64_KIND,
    INT64_KIND, INT64_KIND, BYTES_KIND, BYTES_KIND, INT64_KIND, FLOAT_KIND,
};

typedef struct {
    Py_ssize_t start, end; /* the packed payload / the list's span */
    int kind;              /* 0 = absent or empty Feature */
} span_t;

static int
key_index(const unsigned char *key, Py_ssize_t klen)
{
    for (int k = 0; k < K_COUNT; k++) {
        const char *name = KEY_NAMES[k];
        if ((Py_ssize_t)strlen(name) == klen && memcmp(name, key, (size_t)klen) == 0)
            return k;
    }
    return -1;
}

/* Count the values of a list span; -1 if not canonical. */
static Py_ssize_t
count_values(const unsigned char *buf, int kind, Py_ssize_t pos, Py_ssize_t end)
{
    Py_ssize_t n = 0;
    if (kind == BYTES_KIND) {
        while (pos < end) {
            Py_ssize_t len;
            if (buf[pos] != 0x0A)
                return -1;
            pos++;
            if (read_len(buf, end, &pos, &len) < 0)
                return -1;
            pos += len;
            n++;
        }
        return n;
    }
    if (kind == FLOAT_KIND)
        return (end - pos) / 4;
    while (pos < end) {
        uint64_t v;
        if (read_varint(buf, end, &pos, &v) < 0)
            return -1;
        n++;
    }
    return n;
}

/* The packed payload of a float/int list: [start, end); bytes lists keep the list span. */
static int
payload(const unsigned char *buf, int kind, Py_ssize_t pos, Py_ssize_t end, span_t *out)
{
    out->kind = kind;
    if (pos == end || kind == BYTES_KIND) {
        out->start = pos;
        out->end = end;
        return 0;
    }
    Py_ssize_t n;
    if (buf[pos] != 0x0A)
        return -1;
    pos++;
    if (read_len(buf, end, &pos, &n) < 0 || pos + n != end)
        return -1;
    if (kind == FLOAT_KIND && n % 4)
        return -1;
    out->start = pos;
    out->end = end;
    return 0;
}

/* Every value of a bytes list is UTF-8 (an ASCII scan first; the decoder only if needed). */
static int
texts_utf8(const unsigned char *buf, const span_t *sp)
{
    Py_ssize_t pos = sp->start, len;
    while (pos < sp->end) {
        pos++;
        if (read_len(buf, sp->end, &pos, &len) < 0)
            return 0;
        for (Py_ssize_t i = 0; i < len; i++) {
            if (buf[pos + i] >= 0x80) {
                if (!utf8_ok(buf + pos, len))
                    return 0;
                break;
            }
        }
        pos += len;
    }
    return 1;
}

/* First value of a bytes list: its [start, end). Returns 0 if the list is empty. */
static int
first_bytes(const unsigned char *buf, const span_t *sp, Py_ssize_t *s, Py_ssize_t *e)
{
    Py_ssize_t pos = sp->start, len;
    if (sp->kind == 0 || pos == sp->end)
        return 0;
    pos++;
    if (read_len(buf, sp->end, &pos, &len) < 0)
        return -1;
    *s = pos;
    *e = pos + len;
    return 1;
}

static int64_t
first_int(const unsigned char *buf, const span_t *sp, int *ok)
{
    Py_ssize_t pos = sp->start;
    uint64_t v;
    *ok = 0;
    if (sp->kind == 0 || pos >= sp->end || read_varint(buf, sp->end, &pos, &v) < 0)
        return 0;
    *ok = 1;
    return (int64_t)v;
}

static uint64_t
be32(const unsigned char *p)
{
    return ((uint64_t)p[0] << 24) | ((uint64_t)p[1] << 16) | ((uint64_t)p[2] << 8) | p[3];
}

static double
float_at(const unsigned char *buf, const span_t *sp, Py_ssize_t i)
{
    return PyFloat_Unpack4((const char *)buf + sp->start + 4 * i, 1);
}

/* The first 0xFF at ``pos`` or after that is followed by a byte other than 0x00 (a stuffed
 * zero is entropy-coded data, anything else a marker or fill), or -1 when none is before the
 * last byte. Sixteen bytes at a time with SSE2 (every x86-64 has it): the memchr() per 0xFF
 * this replaces was called every few hundred bytes of a JPEG's scan, and cost as much as the
 * rest of validate's all-clear check. */
static Py_ssize_t
next_marker(const unsigned char *e, Py_ssize_t pos, Py_ssize_t len)
{
#if defined(__SSE2__)
    const __m128i ff = _mm_set1_epi8((char)0xFF), zero = _mm_setzero_si128();
    while (pos + 17 <= len) {
        __m128i a = _mm_loadu_si128((const __m128i *)(e + pos));
        __m128i b = _mm_loadu_si128((const __m128i *)(e + pos + 1));
        unsigned bits = (unsigned)_mm_movemask_epi8(
            _mm_andnot_si128(_mm_cmpeq_epi8(b, zero), _mm_cmpeq_epi8(a, ff)));
        if (bits)
            return pos + __builtin_ctz(bits);
        pos += 16;
    }
#endif
    for (; pos + 1 < len; pos++) {
        if (e[pos] == 0xFF && e[pos + 1] != 0x00)
            return pos;
    }
    return -1;
}

/* tfdrop.codec.imagehead.jpeg_end_py, the same walk: 1 when a JPEG's markers, read from its SOI
 * as libjpeg reads them, end with an EOI after a scan; 0 when the data ends first (or an EOI
 * comes before any scan, or a second SOI). Bytes that are not 0xFF and fill before a marker are
 * skipped, a segment by its length, entropy-coded data up to the next marker that is not a
 * stuffed zero or a restart. No bound on the markers: each turn moves on by two bytes at least,
 * so the walk is linear in the data. */
static int
jpeg_end(const unsigned char *e, Py_ssize_t len)
{
    Py_ssize_t pos = 2;
    int scanned = 0, entropy = 0;
    for (;;) {
        unsigned char m;
        if (entropy) {
            for (;;) {
                Py_ssize_t at = next_marker(e, pos, len);
                if (at < 0)
                    return 0;
                m = e[at + 1];
                pos = at + 1; /* at the byte after the 0xFF */
                if (m != 0xFF && !(m >= 0xD0 && m <= 0xD7))
                    break;
            }
            pos += 1;
            entropy = 0;
        } else {
            while (pos < len && e[pos] != 0xFF)
                pos++;
            while (pos < len && e[pos] == 0xFF)
                pos++;
            if (pos >= len)
                return 0;
            m = e[pos++];
        }
        if (m == 0xD9)
            return scanned;
        if (m == 0xD8)
            return 0;
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7))
            continue;
        if (pos + 2 > len)
            return 0;
        if (m == 0xDA)
            scanned = entropy = 1;
        pos += ((Py_ssize_t)e[pos] << 8) | e[pos + 1];
        if (pos > len)
            return 0;
    }
}

static PyObject *
py_jpeg_end(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf))
        return NULL;
    int r = jpeg_end((const unsigned char *)buf.buf, buf.len);
    PyBuffer_Release(&buf);
    return PyLong_FromLong(r);
}

/* 1 when walking a PNG's chunks by their lengths meets a whole IEND chunk, else 0
 * (tfdrop.codec.imagehead._has_iend; each chunk is 12 bytes at least, so linear). */
static int
png_complete(const unsigned char *e, Py_ssize_t len)
{
    Py_ssize_t pos = 8;
    while (pos + 12 <= len) {
        Py_ssize_t clen = (Py_ssize_t)be32(e + pos);
        if (memcmp(e + pos + 4, "IEND", 4) == 0)
            return pos + 12 + clen <= len;
        pos += 12 + clen;
    }
    return 0;
}

/* The embedded image's header as tfdrop.codec.schema.image_problems reads it: 1 when it has
 * nothing to say (a JPEG or PNG of the declared kind, ending with its end marker and, when its
 * header tells, of the declared size), else 0. */
static int
image_ok(const unsigned char *data, Py_ssize_t enc_s, Py_ssize_t enc_e, Py_ssize_t fmt_s,
         Py_ssize_t fmt_e, int64_t height, int64_t width)
{
    static const unsigned char png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    const unsigned char *f = data + fmt_s;
    Py_ssize_t flen = fmt_e - fmt_s;
    int fmt = 0; /* 0 none, 1 jpeg, 2 png */
    if (flen > 0) {
        if (flen == 4 && memcmp(f, "jpeg", 4) == 0)
            fmt = 1;
        else if (flen == 3 && memcmp(f, "png", 3) == 0)
            fmt = 2;
        else
            return 0;
    }
    if (enc_e <= enc_s)
        return 1;
    const unsigned char *e = data + enc_s;
    Py_ssize_t len = enc_e - enc_s;
    int64_t w = 0, h = 0;
    if (len >= 8 && memcmp(e, png, 8) == 0) {
        if (fmt == 1)
            return 0;
        if (!png_complete(e, len))
            return 0; /* the Python path names it (image_complete) */
        if (len >= 24 && memcmp(e + 12, "IHDR", 4) == 0) {
            w = (int64_t)be32(e + 16);
            h = (int64_t)be32(e + 20);
        }
    } else if (len >= 3 && e[0] == 0xFF && e[1] == 0xD8 && e[2] == 0xFF) {
        if (fmt == 2)
            return 0;
        if (jpeg_end(e, len) != 1)
            return 0; /* cut short: the Python path names it */
        Py_ssize_t pos = 2; /* the size from the first frame header, as schema's jpeg_size */
        while (pos + 4 <= len) {
            if (e[pos] != 0xFF)
                break;
            unsigned char m = e[pos + 1];
            if (m == 0xFF) {
                pos += 1;
                continue;
            }
            if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
                pos += 2;
                continue;
            }
            Py_ssize_t seg = ((Py_ssize_t)e[pos + 2] << 8) | e[pos + 3];
            if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
                if (pos + 9 <= len) {
                    h = ((int64_t)e[pos + 5] << 8) | e[pos + 6];
                    w = ((int64_t)e[pos + 7] << 8) | e[pos + 8];
                }
                break;
            }
            if (m == 0xDA || seg < 2)
                break;
            pos += 2 + seg;
        }
    } else {
        return 0; /* neither a JPEG nor a PNG */
    }
    if (w == 0 || h == 0)
        return 1; /* the header does not tell the size */
    return w == width && h == height;
}

static PyObject *
od_check(PyObject *self, PyObject *args)
{
    PyObject *bytes_obj, *text_ids;
    Py_ssize_t cap;
    int want_labels = 0;
    if (!PyArg_ParseTuple(args, "O!On|p", &PyBytes_Type, &bytes_obj, &text_ids, &cap,
                          &want_labels))
        return NULL;
    if (text_ids != Py_None && !PyDict_Check(text_ids)) {
        PyErr_SetString(PyExc_TypeError, "text_ids must be a dict or None");
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(bytes_obj);
    Py_ssize_t size = PyBytes_GET_SIZE(bytes_obj);
    span_t sp[K_COUNT];
    int seen[K_COUNT];
    Py_ssize_t unknown[MAX_UNKNOWN][2]; /* [start, length) of each unknown key */
    int n_unknown = 0;
    memset(sp, 0, sizeof sp);
    memset(seen, 0, sizeof seen);
    Py_ssize_t pos = 1, flen;
    if (size == 0 || data[0] != 0x0A || read_len(data, size, &pos, &flen) < 0 ||
        pos + flen != size)
        Py_RETURN_NONE;
    while (pos < size) {
        Py_ssize_t elen, klen, vlen, llen;
        if (data[pos] != 0x0A)
            Py_RETURN_NONE;
        pos++;
        if (read_len(data, size, &pos, &elen) < 0)
            Py_RETURN_NONE;
        Py_ssize_t eend = pos + elen;
        if (pos >= eend || data[pos] != 0x0A)
            Py_RETURN_NONE;
        pos++;
        if (read_len(data, eend, &pos, &klen) < 0)
            Py_RETURN_NONE;
        int k = key_index(data + pos, klen);
        if (k < 0 && !key_ok(data + pos, klen))
            Py_RETURN_NONE; /* protobuf refuses the record */
        if (k < 0 && klen >= KP_PREFIX_LEN && memcmp(data + pos, KP_PREFIX, KP_PREFIX_LEN) == 0)
            Py_RETURN_NONE; /* keypoint keys: checked by the Python path only */
        if (k >= 0) {
            if (seen[k])
                Py_RETURN_NONE; /* a repeated key: protobuf keeps the last, TF may not */
            seen[k] = 1;
        } else {
            if (n_unknown == MAX_UNKNOWN)
                Py_RETURN_NONE;
            for (int u = 0; u < n_unknown; u++)
                if (unknown[u][1] == klen && memcmp(data + unknown[u][0], data + pos, klen) == 0)
                    Py_RETURN_NONE;
            unknown[n_unknown][0] = pos;
            unknown[n_unknown][1] = klen;
            n_unknown++;
        }
        pos += klen;
        if (pos == eend || data[pos] != 0x12)
            Py_RETURN_NONE; /* a key without a value: TensorFlow refuses the record */
        pos++;
        if (read_len(data, eend, &pos, &vlen) < 0 || pos + vlen != eend)
            Py_RETURN_NONE;
        if (pos == eend)
            continue; /* an empty Feature */
        int kind;
        switch (data[pos]) {
        case 0x0A: kind = BYTES_KIND; break;
        case 0x12: kind = FLOAT_KIND; break;
        case 0x1A: kind = INT64_KIND; break;
        default: Py_RETURN_NONE;
        }
        Py_ssize_t lpos = pos + 1;
        if (read_len(data, eend, &lpos, &llen) < 0 || lpos + llen != eend)
            Py_RETURN_NONE;
        span_t tmp;
        if (payload(data, kind, lpos, eend, &tmp) < 0)
            Py_RETURN_NONE;
        /* every list is walked to its end: canonical, and within the cap */
        Py_ssize_t count = count_values(data, kind, tmp.start, tmp.end);
        if (count < 0 || count > cap)
            Py_RETURN_NONE;
        if (k >= 0 && k < N_SCALARS && kind == KEY_KINDS[k] && count != 1)
            Py_RETURN_NONE; /* a single-value key with none or several */
        if (k < 0) {
            /* unknown keys are kept as they are */
        } else if (kind != KEY_KINDS[k]) {
            if (!(k == K_MASK && kind == FLOAT_KIND))
                Py_RETURN_NONE; /* a wrong type: the Python path names it */
        } else {
            sp[k] = tmp;
        }
        pos = eend;
    }
    /* scalars: text fields UTF-8, height and width positive */
    static const int texts[] = {K_FILENAME, K_SOURCE_ID, K_FORMAT, K_SHA};
    Py_ssize_t s, e, sha_s = -1, sha_e = -1, enc_s = -1, enc_e = -1;
    Py_ssize_t fmt_s = -1, fmt_e = -1;
    for (int t = 0; t < 4; t++) {
        int r = first_bytes(data, &sp[texts[t]], &s, &e);
        if (r < 0 || (r == 1 && !utf8_ok(data + s, e - s)))
            Py_RETURN_NONE;
        if (r == 1 && texts[t] == K_SHA) {
            sha_s = s;
            sha_e = e;
        }
        if (r == 1 && texts[t] == K_FORMAT) {
            fmt_s = s;
            fmt_e = e;
        }
    }
    int r = first_bytes(data, &sp[K_ENCODED], &s, &e);
    if (r < 0)
        Py_RETURN_NONE;
    if (r == 1) {
        enc_s = s;
        enc_e = e;
    }
    int ok;
    int64_t height = first_int(data, &sp[K_HEIGHT], &ok);
    if (height <= 0 || !ok)
        Py_RETURN_NONE;
    int64_t width = first_int(data, &sp[K_WIDTH], &ok);
    if (width <= 0 || !ok)
        Py_RETURN_NONE;
    if (!image_ok(data, enc_s, enc_e, fmt_s, fmt_e, height, width))
        Py_RETURN_NONE; /* the Python path names what is wrong with the image */
    /* per-object lists: equal lengths, n = the box count */
    static const int objs[] = {K_XMIN, K_XMAX, K_YMIN, K_YMAX, K_LABEL, K_TEXT, K_DIFFICULT,
                               K_TRUNCATED, K_OCCLUDED, K_VIEW, K_MASK, K_CROWD, K_AREA};
    Py_ssize_t counts[K_COUNT];
    Py_ssize_t n = 0;
    for (size_t j = 0; j < sizeof objs / sizeof objs[0]; j++) {
        int k = objs[j];
        counts[k] = sp[k].kind ? count_values(data, sp[k].kind, sp[k].start, sp[k].end) : 0;
        if (counts[k] < 0)
            Py_RETURN_NONE;
        if (k <= K_YMAX && counts[k] > n)
            n = counts[k];
    }
    for (size_t j = 0; j < sizeof objs / sizeof objs[0]; j++) {
        int k = objs[j];
        if (counts[k] != 0 && counts[k] != n)
            Py_RETURN_NONE;
    }
    if (n > 0) {
        for (int k = K_XMIN; k <= K_YMAX; k++)
            if (counts[k] != n)
                Py_RETURN_NONE;
        for (Py_ssize_t i = 0; i < n; i++) {
            double x0 = float_at(data, &sp[K_XMIN], i), x1 = float_at(data, &sp[K_XMAX], i);
            double y0 = float_at(data, &sp[K_YMIN], i), y1 = float_at(data, &sp[K_YMAX], i);
            if (!(x0 >= 0.0 && x0 <= x1 && x1 <= 1.0 && y0 >= 0.0 && y0 <= y1 && y1 <= 1.0))
                Py_RETURN_NONE;
        }
        if (counts[K_LABEL] == 0 || counts[K_TEXT] == 0)
            Py_RETURN_NONE; /* the OD API needs both; the Python path names the missing one */
        /* ids: all >= 1 (an id 0 'background' is left to the Python path) */
        int64_t ids[4096];
        Py_ssize_t nid = counts[K_LABEL];
        if (nid > 4096)
            Py_RETURN_NONE;
        Py_ssize_t q = sp[K_LABEL].start;
        for (Py_ssize_t i = 0; i < nid; i++) {
            uint64_t v;
            read_varint(data, sp[K_LABEL].end, &q, &v);
            ids[i] = (int64_t)v;
            if (ids[i] < 1)
                Py_RETURN_NONE;
        }
        if (text_ids == Py_None && counts[K_TEXT] > 0 && !texts_utf8(data, &sp[K_TEXT]))
            Py_RETURN_NONE; /* a class text that is not UTF-8: the Python path names it */
        if (text_ids != Py_None) {
            if (counts[K_TEXT] == 0) {
                Py_RETURN_NONE; /* ids only: the Python path checks them against the map */
            }
            Py_ssize_t tp = sp[K_TEXT].start, len;
            for (Py_ssize_t i = 0; i < n; i++) {
                tp++;
                read_len(data, sp[K_TEXT].end, &tp, &len);
                if (len == 0)
                    Py_RETURN_NONE;
                PyObject *key = PyBytes_FromStringAndSize((const char *)data + tp, len);
                if (key == NULL)
                    return NULL;
                PyObject *want = PyDict_GetItemWithError(text_ids, key);
                Py_DECREF(key);
                if (want == NULL) {
                    if (PyErr_Occurred())
                        return NULL;
                    Py_RETURN_NONE;
                }
                if (nid) {
                    long long w = PyLong_AsLongLong(want);
                    if (w == -1 && PyErr_Occurred())
                        return NULL;
                    if (w != ids[i])
                        Py_RETURN_NONE;
                }
                tp += len;
            }
        }
    }
    if (sp[K_MASK].kind) {
        Py_ssize_t mp = sp[K_MASK].start, len;
        static const unsigned char png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
        while (mp < sp[K_MASK].end) {
            mp++;
            read_len(data, sp[K_MASK].end, &mp, &len);
            if (len < 8 || memcmp(data + mp, png, 8) != 0 || !png_complete(data + mp, len))
                Py_RETURN_NONE; /* the Python path names what is wrong with it */
            if (len >= 24 && memcmp(data + mp + 12, "IHDR", 4) == 0 &&
                (be32(data + mp + 16) != (uint64_t)width || be32(data + mp + 20) != (uint64_t)height))
                Py_RETURN_NONE; /* a mask of another size than the image */
            mp += len;
        }
    }
    if (!want_labels)
        return Py_BuildValue("(nnnnnnnLL)", n, enc_s, enc_e, sha_s, sha_e, fmt_s, fmt_e,
                             (long long)height, (long long)width);
    /* the objects' class texts and ids (validate's label table), checked above: n of each */
    PyObject *texts_t = PyTuple_New(n), *ids_t = PyTuple_New(n);
    if (texts_t == NULL || ids_t == NULL)
        goto fail;
    Py_ssize_t tp = sp[K_TEXT].start, q = sp[K_LABEL].start, tlen;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t v;
        tp++;
        read_len(data, sp[K_TEXT].end, &tp, &tlen);
        PyObject *t = PyBytes_FromStringAndSize((const char *)data + tp, tlen);
        if (t == NULL)
            goto fail;
        PyTuple_SET_ITEM(texts_t, i, t);
        tp += tlen;
        read_varint(data, sp[K_LABEL].end, &q, &v);
        PyObject *d = PyLong_FromLongLong((long long)v);
        if (d == NULL)
            goto fail;
        PyTuple_SET_ITEM(ids_t, i, d);
    }
    return Py_BuildValue("(nnnnnnnLLNN)", n, enc_s, enc_e, sha_s, sha_e, fmt_s, fmt_e,
                         (long long)height, (long long)width, texts_t, ids_t);
fail:
    Py_XDECREF(texts_t);
    Py_XDECREF(ids_t);
    return NULL;
}

/* ---- encode_example: a tf.train.Example from its features, in one allocation ----------------
 *
 * encode_example(entries) -> bytes. entries: {key (bytes): (kind, values)} with kind BYTES_KIND
 * (a list of bytes), FLOAT_KIND (a list of floats, stored as float32), INT64_KIND (a list of
 * ints within int64) or 0 (values: a serialized Feature, kept as it is). The bytes equal
 * protobuf's deterministic serialization (map entries sorted by key) and
 * tfdrop.codec.wire.ExampleBuilder's pure-Python ones; each value is copied once.
 */
static Py_ssize_t
varint_size(uint64_t v)
{
    Py_ssize_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static unsigned char *
put_varint(unsigned char *out, uint64_t v)
{
    while (v >= 0x80) {
        *out++ = (unsigned char)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    *out++ = (unsigned char)v;
    return out;
}

typedef struct {
    PyObject *key;    /* borrowed */
    int kind;
    PyObject *values; /* borrowed: a list, or the raw Feature bytes */
    Py_ssize_t body;  /* packed floats or varints: their bytes */
    Py_ssize_t inner; /* the list's payload (BytesList values, or the packed field) */
    Py_ssize_t flen;  /* the Feature's size */
} entry_t;

/* Sizes of one entry; -1 with an exception set on a bad value. */
static int
entry_sizes(entry_t *e)
{
    if (e->kind == 0) {
        if (!PyBytes_Check(e->values)) {
            PyErr_SetString(PyExc_TypeError, "a raw feature must be bytes");
            return -1;
        }
        e->flen = PyBytes_GET_SIZE(e->values);
        return 0;
    }
    if (!PyList_Check(e->values)) {
        PyErr_SetString(PyExc_TypeError, "feature values must be a list");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(e->values), inner = 0;
    if (e->kind == BYTES_KIND) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = PyList_GET_ITEM(e->values, i);
            if (!PyBytes_Check(v)) {
                PyErr_SetString(PyExc_TypeError, "bytes_list values must be bytes");
                return -1;
            }
            Py_ssize_t len = PyBytes_GET_SIZE(v);
            inner += 1 + varint_size((uint64_t)len) + len;
        }
        e->inner = inner;
        e->flen = 1 + varint_size((uint64_t)inner) + inner;
        return 0;
    }
    Py_ssize_t body = 0;
    if (e->kind == FLOAT_KIND) {
        for (Py_ssize_t i = 0; i < n; i++) {
            double d = PyFloat_AsDouble(PyList_GET_ITEM(e->values, i));
            if (d == -1.0 && PyErr_Occurred())
                return -1;
        }
        body = 4 * n;
    } else if (e->kind == INT64_KIND) {
        for (Py_ssize_t i = 0; i < n; i++) {
            int overflow;
            long long v = PyLong_AsLongLongAndOverflow(PyList_GET_ITEM(e->values, i), &overflow);
            if (v == -1 && PyErr_Occurred())
                return -1;
            if (overflow) {
                PyErr_Format(PyExc_OverflowError, "%R is outside the int64 range",
                             PyList_GET_ITEM(e->values, i));
                return -1;
            }
            body += varint_size((uint64_t)v);
        }
    } else {
        PyErr_SetString(PyExc_ValueError, "unknown feature kind");
        return -1;
    }
    e->body = body;
    e->inner = inner = n ? 1 + varint_size((uint64_t)body) + body : 0;
    e->flen = 1 + varint_size((uint64_t)inner) + inner;
    return 0;
}

static unsigned char *
put_entry(unsigned char *out, const entry_t *e)
{
    Py_ssize_t klen = PyBytes_GET_SIZE(e->key);
    Py_ssize_t khead = 1 + varint_size((uint64_t)klen) + klen;
    Py_ssize_t elen = khead + 1 + varint_size((uint64_t)e->flen) + e->flen;
    *out++ = 0x0A;
    out = put_varint(out, (uint64_t)elen);
    *out++ = 0x0A;
    out = put_varint(out, (uint64_t)klen);
    memcpy(out, PyBytes_AS_STRING(e->key), (size_t)klen);
    out += klen;
    *out++ = 0x12;
    out = put_varint(out, (uint64_t)e->flen);
    if (e->kind == 0) {
        memcpy(out, PyBytes_AS_STRING(e->values), (size_t)e->flen);
        return out + e->flen;
    }
    static const unsigned char tags[4] = {0, 0x0A, 0x12, 0x1A};
    *out++ = tags[e->kind];
    out = put_varint(out, (uint64_t)e->inner);
    Py_ssize_t n = PyList_GET_SIZE(e->values);
    if (e->kind == BYTES_KIND) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = PyList_GET_ITEM(e->values, i);
            Py_ssize_t len = PyBytes_GET_SIZE(v);
            *out++ = 0x0A;
            out = put_varint(out, (uint64_t)len);
            memcpy(out, PyBytes_AS_STRING(v), (size_t)len);
            out += len;
        }
        return out;
    }
    if (n == 0)
        return out;
    *out++ = 0x0A; /* the packed field */
    out = put_varint(out, (uint64_t)e->body);
    if (e->kind == FLOAT_KIND) {
        for (Py_ssize_t i = 0; i < n; i++) {
            /* a C cast, as array('f') converts: out-of-range values become inf */
            float f = (float)PyFloat_AsDouble(PyList_GET_ITEM(e->values, i));
            uint32_t bits;
            memcpy(&bits, &f, 4);
            out[0] = (unsigned char)bits;
            out[1] = (unsigned char)(bits >> 8);
            out[2] = (unsigned char)(bits >> 16);
            out[3] = (unsigned char)(bits >> 24);
            out += 4;
        }
        return out;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        out = put_varint(out, (uint64_t)PyLong_AsLongLong(PyList_GET_ITEM(e->values, i)));
    return out;
}

static PyObject *
encode_example(PyObject *self, PyObject *args)
{
    PyObject *entries;
    if (!PyArg_ParseTuple(args, "O!", &PyDict_Type, &entries))
        return NULL;
    Py_ssize_t count = PyDict_GET_SIZE(entries);
    if (count == 0)
        return PyBytes_FromStringAndSize(NULL, 0); /* protobuf writes nothing */
    PyObject *keys = PyDict_Keys(entries);
    if (keys == NULL)
        return NULL;
    PyObject *result = NULL;
    entry_t *es = PyMem_Calloc((size_t)count, sizeof(entry_t));
    if (es == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (PyList_Sort(keys) < 0)
        goto done;
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        entry_t *e = &es[i];
        e->key = PyList_GET_ITEM(keys, i);
        if (!PyBytes_Check(e->key)) {
            PyErr_SetString(PyExc_TypeError, "feature keys must be bytes");
            goto done;
        }
        PyObject *pair = PyDict_GetItemWithError(entries, e->key);
        if (pair == NULL || !PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "each entry must be (kind, values)");
            goto done;
        }
        e->kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(pair, 0));
        if (e->kind == -1 && PyErr_Occurred())
            goto done;
        e->values = PyTuple_GET_ITEM(pair, 1);
        if (entry_sizes(e) < 0)
            goto done;
        Py_ssize_t klen = PyBytes_GET_SIZE(e->key);
        Py_ssize_t elen = 1 + varint_size((uint64_t)klen) + klen + 1 +
                          varint_size((uint64_t)e->flen) + e->flen;
        total += 1 + varint_size((uint64_t)elen) + elen;
    }
    result = PyBytes_FromStringAndSize(NULL, 1 + varint_size((uint64_t)total) + total);
    if (result == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    *out++ = 0x0A;
    out = put_varint(out, (uint64_t)total);
    for (Py_ssize_t i = 0; i < count; i++)
        out = put_entry(out, &es[i]); /* every value was converted once above: no errors */
done:
    PyMem_Free(es);
    Py_DECREF(keys);
    return result;
}

static PyMethodDef methods[] = {
    {"od_check", od_check, METH_VARARGS,
     "od_check(data, text_ids, max_values[, labels]): all-clear schema check of one Example: "
     "(n, enc span, sha span, format span, height, width[, texts, ids]) or None."},
    {"jpeg_end", py_jpeg_end, METH_VARARGS,
     "jpeg_end(data): 1 when a JPEG's markers end with an EOI after a scan, else 0 "
     "(tfdrop.codec.imagehead.jpeg_end_py)."},
    {"boxes_ok", boxes_ok, METH_VARARGS,
     "All boxes (xmin, ymin, xmax, ymax lists) inside [0, 1] and ordered."},
    {"parse_features", parse_features, METH_VARARGS,
     "parse_features(data, max_values) -> {key: (kind, values, feature bytes)}, None if not "
     "canonical, or (key, count) for a list of more than max_values values."},
    {"encode_example", encode_example, METH_VARARGS,
     "encode_example({key: (kind, values)}) -> the serialized tf.train.Example (keys sorted)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_wire", "C accelerator for tfdrop.codec.wire", -1, methods,
};

PyMODINIT_FUNC
PyInit__wire(void)
{
    return PyModule_Create(&module);
}
