/* State of a model session shared by runtime/model.c (opening, weights)
 * and runtime/model_run.c (compiled graphs and runs). */
#ifndef QUADC_RUNTIME_MODEL_INTERNAL_H
#define QUADC_RUNTIME_MODEL_INTERNAL_H

#include "codegen/codegen.h"
#include "runtime/model.h"

/* The forward graph compiled for one sequence length. */
typedef struct rt_model_run {
    int T;
    ir_graph *g;
    cg_module *jit;     /* NULL with the interpreter */
    rt_weights *inputs; /* owned tensors, except the caches, which m->caches owns */
    int logits_output;  /* index of `logits` among the graph outputs */
} rt_model_run;

struct rt_model {
    char *model_path;
    rt_model_engine engine;
    int threads;
    bool fuse_elementwise; /* run fuse-elementwise on JIT graphs */
    fe_define *defines; /* names owned */
    int ndefines;
    bool declares_T;
    /* Pass pipeline that runs on every compiled graph, or NULL. A file
     * written by quadc quantize gets its quantizers here. */
    char *passes;
    rt_weights *weights;
    ir_graph *hparam_graph; /* the T = 1 graph, kept for its hparams */
    const ir_hparam *hparams;
    int nhparams;
    int vocab;
    int context;
    bool has_cache;
    rt_weights *caches; /* the cache inputs, shared by every run */
    int position;       /* tokens appended so far */
    rt_model_run *runs;
    int nruns;
};

/* Compiles the model file with the session's defines and T. */
ir_graph *rt_model_compile_graph(const rt_model *m, int T, ir_diag *d);
/* Frees every compiled run and the caches. */
void rt_model_free_runs(rt_model *m);

#endif
