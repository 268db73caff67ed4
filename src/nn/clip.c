/* clip.c: placeholder until the CLIP model lands (see clip.h). */
#include "clip.h"

dinoc_status dinoc_clip_load(dinoc_clip **out, const char *dir) {
    *out = NULL;
    return dinoc_fail(DINOC_ERR_ARG, "%s: CLIP models are not built yet", dir);
}
void  dinoc_clip_free(dinoc_clip *m) { (void)m; }
int   dinoc_clip_embed_dim(const dinoc_clip *m) { return (void)m, 0; }
float dinoc_clip_logit_scale(const dinoc_clip *m) { return (void)m, 0.0f; }
dinoc_status dinoc_clip_encode_images(const dinoc_clip *m, const dinoc_image *imgs, int n, float *out) {
    (void)m, (void)imgs, (void)n, (void)out;
    return dinoc_fail(DINOC_ERR_ARG, "CLIP models are not built yet");
}
dinoc_status dinoc_clip_encode_texts(const dinoc_clip *m, const char *const *texts, int n, float *out) {
    (void)m, (void)texts, (void)n, (void)out;
    return dinoc_fail(DINOC_ERR_ARG, "CLIP models are not built yet");
}
