# dinoc: the front door.  make [BLAS=openblas|none] [OMP=1|0] [MPI=1] [DNNL=1|0] [DEBUG=1] [SAN=address,undefined] [WERROR=1]
#   make            library, CLI (build/dinoc) and test runner (build/dinoc_tests)
#   make test       everything in scripts/test.sh (installs Debian packages if missing)
#   make mpi        also build/dinoc-mpi: the CLI with MPI (data-parallel training under mpirun)
#   make bench      bench/run.sh
BLAS  ?= openblas
OMP   ?= 1
MPI   ?= 0
DNNL  ?= 1
DEBUG ?= 0
SAN   ?=
CC    ?= cc
BUILD ?= build

# -fno-trapping-math and the dynamic cost model let GCC vectorise loops with selects (softmax's exp);
# neither changes a result (no reassociation, no FMA contraction under -std=c11).
CFLAGS_BASE = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter -Iinclude -fPIC \
              -fno-trapping-math -fvect-cost-model=dynamic
ifeq ($(WERROR),1)
  CFLAGS_BASE += -Werror
endif
ifeq ($(DEBUG),1)
  CFLAGS_OPT = -O0 -g
else
  CFLAGS_OPT = -O2 -g
endif
LDLIBS = -lcjson -lstb -ljpeg -lz -lm -lpthread
ifeq ($(BLAS),openblas)
  CFLAGS_BASE += -DDINOC_OPENBLAS -I/usr/include/x86_64-linux-gnu/openblas-pthread
  LDLIBS += -lopenblas
endif
ifeq ($(OMP),1)
  CFLAGS_BASE += -fopenmp
  LDFLAGS += -fopenmp
else
  CFLAGS_BASE += -Wno-unknown-pragmas
endif
# DNNL=1: bf16 products on oneDNN (Debian libdnnl-dev) where the CPU has AMX / AVX512-BF16;
# DNNL=0 builds without it (bf16 is then always emulated: src/ops/bf16.c)
ifeq ($(DNNL),1)
  CFLAGS_BASE += -DDINOC_DNNL
  LDLIBS += -ldnnl
endif
# MPI=1: data-parallel training across processes (src/core/dist.c; Open MPI from Debian)
ifeq ($(MPI),1)
  CFLAGS_BASE += -DDINOC_MPI $(shell mpicc --showme:compile)
  LDLIBS += $(shell mpicc --showme:link)
endif
ifneq ($(SAN),)
  CFLAGS_OPT += -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
  LDFLAGS += -fsanitize=$(SAN)
endif
CFLAGS += $(CFLAGS_BASE) $(CFLAGS_OPT)

LIB_SRC  = $(sort $(wildcard src/*/*.c))
CLI_SRC  = $(sort $(wildcard cli/*.c))
TEST_SRC = $(sort $(wildcard tests/*.c))
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  = $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ = $(TEST_SRC:%.c=$(BUILD)/%.o)
DEPS     = $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d)

all: $(BUILD)/libdinoc.a $(BUILD)/dinoc $(BUILD)/dinoc_tests

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libdinoc.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/dinoc: $(CLI_OBJ) $(BUILD)/libdinoc.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/dinoc_tests: $(TEST_OBJ) $(BUILD)/libdinoc.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# dinoc-mpi: the CLI with MPI for the tests and users of a default build. Only src/core/dist.c
# differs between the two, so every other object is shared with $(BUILD)/dinoc.
$(BUILD)/src/core/dist_mpi.o: src/core/dist.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DDINOC_MPI $(shell mpicc --showme:compile) -MMD -MP -c $< -o $@

$(BUILD)/dinoc-mpi: $(CLI_OBJ) $(filter-out $(BUILD)/src/core/dist.o,$(LIB_OBJ)) $(BUILD)/src/core/dist_mpi.o
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(shell mpicc --showme:link)

mpi: $(BUILD)/dinoc-mpi

# bf16_dnnl_f32: src/ops/bf16.c's oneDNN calls (layouts, sum post-op, bias, scratchpad) run on fp32
# operands, checked against a double product on any CPU (tests/harness/bf16_dnnl_f32.c)
HARNESS_SRC = tests/harness/bf16_dnnl_f32.c src/ops/bf16.c src/ops/vecmath.c src/core/status.c src/core/mem.c src/core/rng.c src/core/threads.c
$(BUILD)/bf16_dnnl_f32: $(HARNESS_SRC) src/internal.h
	$(CC) $(filter-out -DDINOC_DNNL,$(CFLAGS_BASE)) -DDINOC_DNNL -DDINOC_BF16_DT=dnnl_f32 -DDINOC_BF16_HARNESS -O1 -g \
	    -fsanitize=address,undefined -fno-sanitize-recover=all -o $@ $(HARNESS_SRC) $(LDLIBS) -ldnnl

# dinoc_tests_fakebf16: the test runner with bf16.c's backend replaced by a plain-C stand-in of the
# native API (tests/harness/bf16_fake_native.c): the native dispatch of bf16 inference and training
# runs on any CPU (scripts/test.sh runs its bf16 tests)
$(BUILD)/harness/bf16_base.o: src/ops/bf16.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DDINOC_BF16_EXTERNAL_BACKEND -c $< -o $@
$(BUILD)/dinoc_tests_fakebf16: $(TEST_OBJ) $(filter-out $(BUILD)/src/ops/bf16.o,$(LIB_OBJ)) $(BUILD)/harness/bf16_base.o \
                               $(BUILD)/tests/harness/bf16_fake_native.o
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

test:
	bash scripts/test.sh

bench: all
	bash bench/run.sh

clean:
	rm -rf $(BUILD)

.PHONY: all mpi test bench clean
-include $(DEPS) $(BUILD)/src/core/dist_mpi.d
