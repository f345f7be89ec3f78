// C side of WithProgress: libtimm calls this trampoline, which hands the call to Go with the
// cgo.Handle that identifies the Go callback. Kept in C so the handle travels as an integer and
// no Go pointer is stored in C memory.
#include <timm.h>
#include "_cgo_export.h"

static void timm_go_progress_trampoline(uint64_t done, uint64_t total, void *user_data) {
	timmGoProgress(done, total, (uintptr_t)user_data);
}

TimmStatus timm_go_set_progress(TimmOptions *options, uintptr_t handle) {
	return timm_options_set_progress(options, timm_go_progress_trampoline, (void *)handle);
}
