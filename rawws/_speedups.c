/* rawws._speedups: RFC 6455 §5.3 masking in C, the optional accelerator of rawws.masking.
 *
 * Masking XORs payload byte i with key[i % 4]. In pure Python it is the cost
 * of a big message; here it runs at about memory speed (docs/performance.md
 * has both). The
 * module exports the same three functions as the pure-Python path of
 * rawws/masking.py, with the same arguments:
 *
 *     mask(data, key) -> bytes                         a masked copy
 *     masked_slice(data, start, end, key) -> bytes     data[start:end] masked, no slice made
 *     mask_in_place(buffer, key, start=0, end=None)    a writable buffer masked where it lies
 *
 * `data` is any object with the buffer protocol (bytes, bytearray,
 * memoryview), `key` 4 bytes (bytes or bytearray), applied from data[start].
 *
 * The trick: the four key bytes twice fill a 64-bit word, so one XOR masks
 * 8 payload bytes; a word is a multiple of 4 bytes, so the key stays lined
 * up with the payload from one word to the next. Loads and stores go through
 * memcpy, so the data may start at any address (it compiles to plain
 * unaligned moves). With -O3 (setup.py) gcc vectorizes the loop to 16 bytes
 * a step (SSE2 on x86-64): hand-written SSE2 intrinsics measured no faster,
 * so there are none.
 *
 * Nothing here is needed: without this module rawws runs its pure-Python
 * masking, and RAWWS_PURE_PYTHON=1 makes it do so even when this is built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define KEY_SIZE 4
/* Past this many bytes the GIL is let go while masking: other threads run meanwhile. */
#define RELEASE_GIL_MIN (64 * 1024)

/* dst[i] = src[i] ^ key[i % 4] for i < n. dst may be src (in place), never partly over it. */
static void
xor_with_key(unsigned char *dst, const unsigned char *src, Py_ssize_t n,
             const unsigned char key[KEY_SIZE])
{
    unsigned char repeated[8];
    uint64_t key_word;
    Py_ssize_t i = 0;

    for (int j = 0; j < 8; j++) {
        repeated[j] = key[j % KEY_SIZE];
    }
    memcpy(&key_word, repeated, 8);   /* the key twice, in memory order: no endianness */

    for (; i + 8 <= n; i += 8) {      /* gcc -O3 turns this into 16-byte vector XORs */
        uint64_t word;
        memcpy(&word, src + i, 8);
        word ^= key_word;
        memcpy(dst + i, &word, 8);
    }
    for (; i < n; i++) {              /* the last 0-7 bytes */
        dst[i] = src[i] ^ key[i % KEY_SIZE];
    }
}

/* Masks n bytes, without the GIL when there are many: the buffers are pinned by their views. */
static void
mask_bytes(unsigned char *dst, const unsigned char *src, Py_ssize_t n,
           const unsigned char key[KEY_SIZE])
{
    if (n >= RELEASE_GIL_MIN) {
        Py_BEGIN_ALLOW_THREADS
        xor_with_key(dst, src, n, key);
        Py_END_ALLOW_THREADS
    }
    else {
        xor_with_key(dst, src, n, key);
    }
}

/* Copies the 4 key bytes out of `obj` into key; -1 with an exception if it is not 4 bytes. */
static int
get_key(PyObject *obj, unsigned char key[KEY_SIZE])
{
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (view.len != KEY_SIZE) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "a masking key is exactly 4 bytes");
        return -1;
    }
    memcpy(key, view.buf, KEY_SIZE);
    PyBuffer_Release(&view);
    return 0;
}

/* Reads start and end (end may be None: the length) and checks 0 <= start <= end <= length. */
static int
get_range(PyObject *start_obj, PyObject *end_obj, Py_ssize_t length,
          Py_ssize_t *start, Py_ssize_t *end)
{
    *start = start_obj == NULL ? 0 : PyNumber_AsSsize_t(start_obj, PyExc_OverflowError);
    if (*start == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (end_obj == NULL || end_obj == Py_None) {
        *end = length;
    }
    else {
        *end = PyNumber_AsSsize_t(end_obj, PyExc_OverflowError);
        if (*end == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    if (*start < 0 || *start > *end || *end > length) {
        PyErr_Format(PyExc_ValueError, "range [%zd:%zd] is not within a buffer of %zd bytes",
                     *start, *end, length);
        return -1;
    }
    return 0;
}

/* True when a function given nargs arguments takes that many; else false with a TypeError. */
static int
check_arg_count(const char *name, Py_ssize_t nargs, Py_ssize_t least, Py_ssize_t most)
{
    if (nargs >= least && nargs <= most) {
        return 1;
    }
    if (least == most) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, least, nargs);
    }
    else {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd to %zd arguments (%zd given)",
                     name, least, most, nargs);
    }
    return 0;
}

/* data[start:end] masked, as new bytes (the body of mask and masked_slice). */
static PyObject *
masked_copy(PyObject *data, PyObject *start_obj, PyObject *end_obj, PyObject *key_obj)
{
    unsigned char key[KEY_SIZE];
    Py_buffer view;
    Py_ssize_t start, end;
    PyObject *result = NULL;

    if (get_key(key_obj, key) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (get_range(start_obj, end_obj, view.len, &start, &end) == 0) {
        result = PyBytes_FromStringAndSize(NULL, end - start);
        if (result != NULL) {
            mask_bytes((unsigned char *)PyBytes_AS_STRING(result),
                       (const unsigned char *)view.buf + start, end - start, key);
        }
    }
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(mask_doc,
"mask(data, key) -> bytes\n\n"
"`data` XORed with the repeating 4-byte `key` (RFC 6455 section 5.3), as new bytes.");

static PyObject *
speedups_mask(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_arg_count("mask", nargs, 2, 2)) {
        return NULL;
    }
    return masked_copy(args[0], NULL, NULL, args[1]);
}

PyDoc_STRVAR(masked_slice_doc,
"masked_slice(data, start, end, key) -> bytes\n\n"
"data[start:end] XORed with the repeating `key`, key[0] on data[start], as new bytes.\n"
"`data` is left as it was.");

static PyObject *
speedups_masked_slice(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_arg_count("masked_slice", nargs, 4, 4)) {
        return NULL;
    }
    return masked_copy(args[0], args[1], args[2], args[3]);
}

PyDoc_STRVAR(mask_in_place_doc,
"mask_in_place(buffer, key, start=0, end=None) -> None\n\n"
"XOR buffer[start:end] with the repeating `key`, key[0] on buffer[start], where it lies.\n"
"`buffer` must be writable (a bytearray, or a memoryview of one).");

static PyObject *
speedups_mask_in_place(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[KEY_SIZE];
    Py_buffer view;
    Py_ssize_t start, end;

    if (!check_arg_count("mask_in_place", nargs, 2, 4)) {
        return NULL;
    }
    if (get_key(args[1], key) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    if (get_range(nargs > 2 ? args[2] : NULL, nargs > 3 ? args[3] : NULL, view.len,
                  &start, &end) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *bytes = (unsigned char *)view.buf + start;
    mask_bytes(bytes, bytes, end - start, key);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyMethodDef speedups_methods[] = {
    {"mask", (PyCFunction)(void (*)(void))speedups_mask, METH_FASTCALL, mask_doc},
    {"masked_slice", (PyCFunction)(void (*)(void))speedups_masked_slice, METH_FASTCALL,
     masked_slice_doc},
    {"mask_in_place", (PyCFunction)(void (*)(void))speedups_mask_in_place, METH_FASTCALL,
     mask_in_place_doc},
    {NULL, NULL, 0, NULL},
};

/* The module keeps no state, so it is safe in subinterpreters and without the GIL. */
static PyModuleDef_Slot speedups_slots[] = {
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "rawws._speedups",
    .m_doc = "RFC 6455 masking in C: the optional accelerator of rawws.masking.",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
