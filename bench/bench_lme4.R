# Time lme4::lmer on one model, in-process, and print one JSON object on stdout.
#
# Called by bench/bench_fit.py, one Rscript process per model, so R's start-up and
# package loading are outside the timing (as the Python peers' imports are):
#
#   Rscript bench/bench_lme4.R DATA.csv FORMULA FACTORS REPEATS WARMUP [MODE]
#
# FACTORS is a comma-separated list of columns converted to R factors before timing
# ("" for none); levels are sorted as text, as in the reference fixtures.  WARMUP 1 adds
# an untimed first fit (byte-compilation, Matrix method dispatch caches); 0 skips it, for
# quick runs of the large models, where one fit costs tens of seconds.
# MODE (default "fit"): "refits:RESPONSES.csv" times refit(fit, newresp) for every row of
# the CSV (one simulated response per row, no header), as bootMer does; "loo" times a
# fresh lmer on each leave-one-observation-out subset.  Repeated-fit modes report the
# summed REML criterion and evaluations over their fits.
# No jsonlite: the output is written by hand so only r-base-core and r-cran-lme4 are needed.

suppressPackageStartupMessages(library(lme4))

args <- commandArgs(trailingOnly = TRUE)
if (!(length(args) %in% c(5, 6))) {
  stop("usage: Rscript bench_lme4.R DATA.csv FORMULA FACTORS REPEATS WARMUP [MODE]")
}
path <- args[[1]]
form <- as.formula(args[[2]])
factors <- if (nzchar(args[[3]])) strsplit(args[[3]], ",", fixed = TRUE)[[1]] else character()
repeats <- as.integer(args[[4]])
warmup <- args[[5]] == "1"
mode <- if (length(args) == 6) args[[6]] else "fit"

data <- read.csv(path)
for (col in factors) {
  data[[col]] <- factor(as.character(data[[col]]),
                        levels = sort(unique(as.character(data[[col]]))))
}

fit_once <- function() lmer(form, data = data, REML = TRUE)
if (startsWith(mode, "refits:")) {
  responses <- as.matrix(read.csv(sub("^refits:", "", mode), header = FALSE))
  base <- fit_once()
  run_once <- function() lapply(seq_len(nrow(responses)),
                                function(i) refit(base, responses[i, ]))
} else if (mode == "loo") {
  run_once <- function() lapply(seq_len(nrow(data)),
                                function(i) lmer(form, data = data[-i, ], REML = TRUE))
} else {
  run_once <- function() list(fit_once())
}

if (warmup) fits <- run_once()
times <- numeric(repeats)
for (i in seq_len(repeats)) {
  start <- as.numeric(Sys.time())
  fits <- run_once()
  times[i] <- as.numeric(Sys.time()) - start
}
fit <- fits[[length(fits)]]

num <- function(x) paste(sprintf("%.17g", x), collapse = ", ")
msgs <- fit@optinfo$conv$lme4$messages
cat(sprintf(paste0(
  '{"peer": "lme4", "version": "%s", "r_version": "%s", "times": [%s], ',
  '"median": %s, "objective": %s, "theta": [%s], "fixef": [%s], "sigma": %s, ',
  '"singular": %s, "warnings": %d, "evaluations": %d, "blas": "%s"}\n'),
  as.character(packageVersion("lme4")), R.version$version.string,
  num(times), num(median(times)), num(sum(sapply(fits, REMLcrit))), num(getME(fit, "theta")),
  num(fixef(fit)), num(sigma(fit)), tolower(as.character(isSingular(fit))),
  length(msgs), as.integer(sum(sapply(fits, function(f) f@optinfo$feval))),
  gsub('"', "'", extSoftVersion()[["BLAS"]])))
