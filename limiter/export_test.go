package limiter

// Workers runs f(i) for i in [0, n) on w goroutines, as Close does.
var Workers = workers

// MinStep is how far at least the spending bound runs ahead of spending.
const MinStep = minStep
