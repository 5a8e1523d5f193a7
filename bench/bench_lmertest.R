# Time lmerTest's Satterthwaite table and pbkrtest's Kenward-Roger table (through lmerTest's
# summary) on one model, in-process, and print one JSON object on stdout.
#
# Called by bench/bench_fit.py (inference rows), one Rscript process per model:
#
#   Rscript bench/bench_lmertest.R DATA.csv FORMULA FACTORS REPEATS KR
#
# Satterthwaite is timed as lmerTest spends it: as_lmerModLmerTest() on the lme4 fit (the
# Hessian and Jacobian by numDeriv, which lmerTest::lmer runs inside the fit) plus
# summary(ddf = "Satterthwaite"); Kenward-Roger as summary(ddf = "Kenward-Roger") (pbkrtest's
# vcovAdj on every call).  KR 0 skips Kenward-Roger (large models).  One untimed warm-up each.

suppressPackageStartupMessages({library(lme4); library(lmerTest)})

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 5) stop("usage: Rscript bench_lmertest.R DATA.csv FORMULA FACTORS REPEATS KR")
data <- read.csv(args[[1]])
form <- as.formula(args[[2]])
factors <- if (nzchar(args[[3]])) strsplit(args[[3]], ",", fixed = TRUE)[[1]] else character()
repeats <- as.integer(args[[4]])
with_kr <- args[[5]] == "1"
for (col in factors) data[[col]] <- factor(as.character(data[[col]]))

fit <- lme4::lmer(form, data = data, REML = TRUE)
satterthwaite <- function() summary(as_lmerModLmerTest(fit), ddf = "Satterthwaite")$coefficients
kenward_roger <- function() summary(as_lmerModLmerTest(fit), ddf = "Kenward-Roger")$coefficients
timed <- function(f) {
  f()
  vapply(seq_len(repeats), function(i) {
    start <- as.numeric(Sys.time()); f(); as.numeric(Sys.time()) - start
  }, numeric(1))
}
t_sat <- timed(satterthwaite)
# as_lmerModLmerTest is not part of pbkrtest's cost: subtract it from the KR timing
t_coerce <- timed(function() as_lmerModLmerTest(fit))
t_kr <- if (with_kr) timed(kenward_roger) - median(t_coerce) else numeric(0)
num <- function(x) if (length(x)) paste(sprintf("%.17g", x), collapse = ", ") else ""
cat(sprintf('{"lmerTest": "%s", "pbkrtest": "%s", "satterthwaite": [%s], "kenward_roger": [%s]}\n',
            as.character(packageVersion("lmerTest")), as.character(packageVersion("pbkrtest")),
            num(t_sat), num(t_kr)))
