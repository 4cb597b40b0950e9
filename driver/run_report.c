/* The final table of `quadc run`: perplexity per evaluation text for the
 * four models, throughput, file sizes and the quantization losses, as
 * Markdown on standard output and in DIR/report.md. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "driver/run.h"

static const char *const model_titles[RUN_NMODELS] = {"FP32", "PTQ (fake-quant)", "Quadapter (fake-quant)",
                                                      "Quadapter INT8 (binary)"};

static void write_settings(FILE *out, const run_state *s)
{
    const run_args *a = s->a;
    fprintf(out, "| setting | value |\n|---|---|\n");
    fprintf(out, "| model | %s |\n", a->model);
    fprintf(out, "| weights | %s%s |\n", a->weights, a->default_weights ? " (the default model)" : "");
    fprintf(out, "| hyperparameters |");
    for (int i = 0; i < s->ndefines; i++)
        fprintf(out, " %s=%lld", s->defines[i].name, (long long)s->defines[i].value);
    fprintf(out, "%s |\n", s->ndefines == 0 ? " the model file's defaults" : "");
    fprintf(out, "| bits | %s |\n", a->bits);
    fprintf(out, "| calibration | %s: %d sequences of %d tokens, seed %llu |\n", a->calib, a->calib_seqs, a->seq,
            (unsigned long long)a->seed);
    fprintf(out, "| Quadapter training | %d phase 1 steps per block, %d phase 2 steps, lr %g |\n", a->phase1_steps,
            a->phase2_steps, (double)a->lr);
    fprintf(out, "| evaluation | window %d, stride %d", s->window, s->stride);
    if (a->max_eval_tokens > 0)
        fprintf(out, ", the first %lld tokens of each text", a->max_eval_tokens);
    fprintf(out, " |\n");
    if (a->target_cpu || a->triple)
        fprintf(out, "| INT8 target | %s%s%s |\n", a->triple ? a->triple : "host",
                a->target_cpu ? ", CPU " : "", a->target_cpu ? a->target_cpu : "");
    fprintf(out, "\n");
}

static void write_perplexity(FILE *out, const run_state *s)
{
    fprintf(out, "## Perplexity\n\n| eval text | tokens scored |");
    for (int m = 0; m < RUN_NMODELS; m++)
        fprintf(out, " %s |", model_titles[m]);
    fprintf(out, "\n|---|---|");
    for (int m = 0; m < RUN_NMODELS; m++)
        fprintf(out, "---|");
    fprintf(out, "\n");
    for (int i = 0; i < s->ntexts; i++) {
        fprintf(out, "| %s | %zu |", s->texts[i].path, s->scores[RUN_FP32][i].tokens_scored);
        for (int m = 0; m < RUN_NMODELS; m++) {
            if (s->scores[m] && s->scores[m][i].measured)
                fprintf(out, " %.3f |", s->scores[m][i].perplexity);
            else
                fprintf(out, " not run |");
        }
        fprintf(out, "\n");
    }

    /* Throughput over every text: scored tokens per second of evaluation. */
    fprintf(out, "| throughput (tokens/s) | |");
    for (int m = 0; m < RUN_NMODELS; m++) {
        double tokens = 0, seconds = 0;
        for (int i = 0; s->scores[m] && i < s->ntexts; i++) {
            tokens += (double)s->scores[m][i].tokens_scored;
            seconds += s->scores[m][i].seconds;
        }
        if (seconds > 0)
            fprintf(out, " %.1f |", tokens / seconds);
        else
            fprintf(out, " not run |");
    }
    fprintf(out, "\n\n");
    fprintf(out, "FP32, PTQ and Quadapter (fake-quant) run in quadc with the LLVM JIT; the INT8 column is the\n"
                 "built executable, run as a separate process.\n\n");
}

static void write_size_row(FILE *out, const char *label, const char *path, long long bytes)
{
    if (bytes >= 0)
        fprintf(out, "| %s | %s | %lld |\n", label, path, bytes);
}

static void write_sizes(FILE *out, const run_state *s)
{
    fprintf(out, "## Sizes\n\n| file | path | bytes |\n|---|---|---|\n");
    write_size_row(out, "float weights", s->a->weights, s->float_bytes);
    write_size_row(out, "quantized model (f32 weights with scales and zero points)", s->quantized_path,
                   s->quantized_bytes);
    write_size_row(out, "INT8 object (i8 weights and the f32 token embedding, embedded)", s->object_path,
                   s->object_bytes);
    write_size_row(out, "C header", s->header_path, s->header_bytes);
    if (s->exe_path)
        write_size_row(out, "INT8 executable", s->exe_path, s->exe_bytes);
    fprintf(out, "\n");
}

static void write_losses(FILE *out, const run_state *s)
{
    fprintf(out, "## LM loss on the calibration sequences\n\n| model | loss |\n|---|---|\n");
    fprintf(out, "| float | %.6f |\n| PTQ | %.6f |\n| Quadapter | %.6f |\n\n", s->calib_loss[0], s->calib_loss[1],
            s->calib_loss[2]);
    fprintf(out, "Quadapter phase 2 moved the loss from %.6f to %.6f.\n\n", s->quadapter_loss_before,
            s->quadapter_loss_after);
    if (s->nblocks > 0 && s->block_loss_before) {
        fprintf(out, "Phase 1, block output MSE:\n\n| block | before | after |\n|---|---|---|\n");
        for (int b = 0; b < s->nblocks; b++)
            fprintf(out, "| %d | %.6g | %.6g |\n", b, s->block_loss_before[b], s->block_loss_after[b]);
        fprintf(out, "\n");
    }
}

static void write_times(FILE *out, const run_state *s)
{
    static const char *const stages[RUN_NSTAGES] = {"FP32 perplexity", "PTQ and its perplexity",
                                                    "Quadapter and its perplexity", "INT8 build",
                                                    "perplexity of the executable"};
    fprintf(out, "## Time\n\n| stage | seconds |\n|---|---|\n");
    for (int k = 0; k < RUN_NSTAGES; k++)
        if (s->stage_seconds[k] > 0)
            fprintf(out, "| %s | %.1f |\n", stages[k], s->stage_seconds[k]);
}

static int write_report(FILE *out, void *ctx)
{
    const run_state *s = ctx;
    fprintf(out, "# quadc run report\n\n");
    write_settings(out, s);
    write_perplexity(out, s);
    write_sizes(out, s);
    write_losses(out, s);
    write_times(out, s);
    return ferror(out) ? -1 : 0;
}

int run_write_report(run_state *s)
{
    fflush(stderr);
    write_report(stdout, s);
    fflush(stdout);
    if (driver_write_atomic(s->report_path, write_report, s, s->d) != 0)
        return -1;
    fprintf(stderr, "wrote the report %s\n", s->report_path);
    return 0;
}
