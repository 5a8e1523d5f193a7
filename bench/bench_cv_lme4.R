# Time lme4 on leave-one-out cross-validation of sleepstudy, in-process, and print one JSON
# object on stdout.  Called by bench/bench_fit.py (the simulation block):
#
#   Rscript bench/bench_cv_lme4.R sleepstudy.csv REPEATS
#
# "lmer_loop": the 180 lmer(Reaction ~ Days + (Days | Subject)) fits on the data without one
# row each (the fits alone); "full_loo": what lmmcore.cross_validate(scheme = "loo") does, as
# in tests/fixtures/cv/gen_cv.R: per row lm(y ~ x), lm(y ~ x * g), lmer and their predictions.
# Each is the median of REPEATS runs after an untimed warm-up fit.  No jsonlite needed.

suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[[1]])
repeats <- as.integer(args[[2]])
d$Subject <- factor(as.character(d$Subject), levels = sort(unique(as.character(d$Subject))))
form <- Reaction ~ Days + (Days | Subject)
invisible(lmer(form, d))

lmer_loop <- function() for (k in seq_len(nrow(d))) lmer(form, d[-k, ])
full_loo <- function() {
  for (k in seq_len(nrow(d))) {
    tr <- d[-k, ]; te <- d[k, , drop = FALSE]
    predict(lm(Reaction ~ Days, tr), te)
    predict(lm(Reaction ~ Days * Subject, tr), te)
    predict(lmer(form, tr), te, allow.new.levels = TRUE)
  }
}
time_it <- function(f) {
  t <- numeric(repeats)
  for (i in seq_len(repeats)) { s <- as.numeric(Sys.time()); f(); t[i] <- as.numeric(Sys.time()) - s }
  t
}
a <- time_it(lmer_loop)
b <- time_it(full_loo)
num <- function(x) paste(sprintf("%.6g", x), collapse = ", ")
cat(sprintf('{"lmer_loop": [%s], "full_loo": [%s], "lme4": "%s"}\n', num(a), num(b),
            as.character(packageVersion("lme4"))))
