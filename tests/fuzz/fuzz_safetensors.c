/* fuzz_safetensors.c: libFuzzer target for the safetensors reader (src/io/safetensors.c).
 *
 * The input is a whole .safetensors file in memory. On a successful open every tensor is looked
 * up by index and by name, its element count checked against its byte size, and float tensors
 * (F32/F16/BF16/F64) converted to float32. Metadata lookups run too. The reader must never
 * crash, leak or hit undefined behaviour, whatever the bytes.
 *
 * Build and run: scripts/fuzz.sh 60 fuzz_safetensors (seeds in tests/fuzz/corpus/fuzz_safetensors). */
#include "dinoc.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dinoc_safetensors *st = NULL;
    if (dinoc_safetensors_open_memory(&st, data, size, "fuzz.safetensors") != DINOC_OK) {
        if (st) abort(); /* a failed open must leave *out NULL */
        if (!dinoc_last_error()[0]) abort(); /* and say why */
        return 0;
    }
    int n = dinoc_safetensors_count(st);
    for (int i = 0; i < n; i++) {
        const dinoc_tensor *t = dinoc_safetensors_get(st, i);
        if (!t || !t->name) abort();
        if (dinoc_safetensors_find(st, t->name) != t) abort(); /* names are unique */
        int64_t numel = dinoc_tensor_numel(t);
        if (numel < 0) abort();
        size_t es = dinoc_dtype_size(t->dtype);
        if (es == 0 || (uint64_t)numel * es != t->nbytes) abort();
        /* data lies inside the input */
        if (t->nbytes && ((const uint8_t *)t->data < data ||
                          (const uint8_t *)t->data + t->nbytes > data + size))
            abort();
        if (t->dtype == DINOC_DTYPE_F32 || t->dtype == DINOC_DTYPE_F16 ||
            t->dtype == DINOC_DTYPE_BF16 || t->dtype == DINOC_DTYPE_F64) {
            float *dst = malloc((size_t)numel * sizeof(float) + 1);
            if (!dst) abort();
            if (dinoc_tensor_to_f32(t, dst, numel) != DINOC_OK) abort();
            /* a wrong element count must be refused, not written past */
            if (dinoc_tensor_to_f32(t, dst, numel + 1) == DINOC_OK) abort();
            free(dst);
        } else {
            float f;
            if (dinoc_tensor_to_f32(t, &f, numel) == DINOC_OK) abort();
        }
    }
    if (dinoc_safetensors_get(st, n) || dinoc_safetensors_get(st, -1)) abort();
    (void)dinoc_safetensors_find(st, "");
    (void)dinoc_safetensors_find(st, "embeddings.cls_token");
    (void)dinoc_safetensors_metadata(st, "format");
    (void)dinoc_safetensors_metadata(st, "");
    dinoc_safetensors_close(st);
    return 0;
}
