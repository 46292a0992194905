; gimp-lib.scm - what the Script-Fu test scripts share (tests/gimp/*.scm for GIMP 2.10,
; tests/gimp3/test-plugin.scm for GIMP 3.0): TAP output and small list and string helpers, in
; Scheme that both GIMPs' Script-Fu read alike. The shell script loads it first, after defining
;   tap-path    the file the TAP lines go to (batch Script-Fu has no usable stdout)
; Not here: anything that calls a PDB procedure whose form differs between 2.10 and 3.0.

(define tap-port (open-output-file tap-path))
(define tap-n 0)
(define (tap-line s) (display s tap-port) (newline tap-port))
(define (diag s) (tap-line (string-append "# " s)))
(define (ok pass name)
  (set! tap-n (+ tap-n 1))
  (tap-line (string-append (if pass "ok " "not ok ") (number->string tap-n) " - " name)))
; The plan and the line the shell script looks for to know the script ran to its end.
(define (tap-finish)
  (tap-line (string-append "1.." (number->string tap-n)))
  (tap-line "# script finished")
  (close-output-port tap-port))

(define (string-contains hay needle)
  (let ((n (string-length needle)) (h (string-length hay)))
    (let loop ((i 0))
      (cond ((> (+ i n) h) #f)
            ((string=? (substring hay i (+ i n)) needle) #t)
            (else (loop (+ i 1)))))))

; GIMP keeps layer names unique (a repeated name gets " #1"), so names are checked by prefix.
(define (name-starts? l prefix)
  (let ((name (car (gimp-item-get-name l))))
    (and (>= (string-length name) (string-length prefix))
         (string=? (substring name 0 (string-length prefix)) prefix))))

(define (drop lst k)
  (if (or (= k 0) (null? lst)) lst (drop (cdr lst) (- k 1))))
(define (take lst k)
  (if (or (= k 0) (null? lst)) '() (cons (car lst) (take (cdr lst) (- k 1)))))
