# image-matrix: login shell defaults (sourced from /etc/profile.d and ~/.bashrc).
case ":$PATH:" in *:/opt/miniconda3/bin:*) ;; *) PATH="/opt/miniconda3/bin:$PATH" ;; esac
export PATH
# Show the banner once per interactive session.
if [ -n "${PS1:-}" ] && [ -z "${IMAGE_MATRIX_MOTD_SHOWN:-}" ] && [ -x /init/bin/motd ]; then
  export IMAGE_MATRIX_MOTD_SHOWN=1
  /init/bin/motd
fi
