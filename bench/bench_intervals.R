# Time lme4's profile confint and bootMer on sleepstudy (Days | Subject), in-process; print
# one JSON object.  Called by bench/bench_fit.py (its intervals block):
#
#   Rscript bench/bench_intervals.R sleepstudy.csv PROFILE_REPEATS NSIM
#
# The profile: confint(fit, method = "profile", oldNames = FALSE), median of the repeats.
# The bootstrap: bootMer(fit, FUN, nsim = NSIM) with lme4's confint(method = "boot") FUN
# (sds, correlation, sigma, fixed effects), timed once.  No jsonlite (only r-cran-lme4).

suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
data <- read.csv(args[[1]])
data$Subject <- factor(as.character(data$Subject))
repeats <- as.integer(args[[2]])
nsim <- as.integer(args[[3]])
fit <- lmer(Reaction ~ Days + (Days | Subject), data)
invisible(confint(fit, method = "profile", oldNames = FALSE, quiet = TRUE))  # warm-up
times <- numeric(repeats)
for (i in seq_len(repeats)) {
  start <- as.numeric(Sys.time())
  ci <- confint(fit, method = "profile", oldNames = FALSE, quiet = TRUE)
  times[i] <- as.numeric(Sys.time()) - start
}
vn <- lme4:::profnames(fit, FALSE)
fun <- function(x) c(setNames(lme4:::Cv_to_Sv(x@theta, n = lengths(x@cnms), s = sigma(x)), vn),
                     fixef(x))
start <- as.numeric(Sys.time())
bb <- bootMer(fit, fun, nsim = nsim, seed = 101)
boot_s <- as.numeric(Sys.time()) - start
num <- function(x) paste(sprintf("%.17g", x), collapse = ", ")
cat(sprintf('{"profile_times": [%s], "profile_median": %s, "boot_seconds": %s, "nsim": %d, "version": "%s"}\n',
            num(times), num(median(times)), num(boot_s), nsim, as.character(packageVersion("lme4"))))
